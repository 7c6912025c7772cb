"""The numpy predictor: load a model file, predict log prices, and explain them exactly.

This module imports only numpy and the standard library, so that a Lambda function, the serving
process and the web app can price a stone without scikit-learn. ``gemcast.export`` turns a
fitted scikit-learn estimator into the arrays described here; ``training`` writes them with
:func:`save_model`, and everything else reads them with :func:`load_model`.

The model file
--------------
A model file is a numpy ``.npz`` archive, written and read with ``allow_pickle=False``: a
file holding a pickle or an object array is refused, never executed. The archive carries its
own description in the array ``__meta__`` (UTF-8 JSON as ``uint8``): ``format``,
``format_version``, ``kind``, ``feature_names``, ``target``, ``n_trees`` and, per fitted
estimator that went into it, its type, weight and parameters (``components``).

Every model predicts ``log(price)`` from the 9 features in ``schema.FEATURES`` order, with
cut, color and clarity as ordinal codes (worst = 0). Two kinds exist:

``tree_ensemble``: a weighted sum of regression trees plus a constant. One format holds a
HistGradientBoostingRegressor, a random forest, extra trees, a GradientBoostingRegressor, a
single tree, or a weighted average of several of them (their trees concatenated, each tree's
weight multiplied by its model's weight, the constants averaged into one bias)::

    tree_feature   int32   (T, M)  feature index 0..8 of a split node; -1 at leaves and padding
    tree_threshold float64 (T, M)  x goes left when x <= threshold (HGB and sklearn trees alike)
    tree_left      int32   (T, M)  child node index within the tree; -1 at leaves
    tree_right     int32   (T, M)
    tree_value     float64 (T, M)  node value; only leaves' values are used to predict
    tree_cover     float64 (T, M)  training samples (weighted) that reached the node
    tree_weight    float64 (T,)    prediction = bias + sum_t weight_t * value_t(leaf of x)
    tree_float32   bool    (T,)    compare float32(x) with the threshold, as sklearn's
                                   DecisionTree does (HGB compares float64 x)
    bias           float64 ()

``linear``: ``log_price = ((linear_design(X) - center) / scale) @ coef + intercept``, arrays
``coef``, ``center``, ``scale``, ``background_mean`` (the mean of the design columns over the
training data), all ``(D,)`` float64, and ``intercept`` ``()``; the design is
:func:`linear_design` (``DESIGN_VERSION``, named column by column in the metadata), the one
function that training and prediction both call, so they cannot drift apart.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from gemcast.errors import GemcastError, ValidationError
from gemcast.schema import CATEGORIES, FEATURES

FORMAT = "gemcast-model"
FORMAT_VERSION = 1
META_KEY = "__meta__"
KIND_TREES = "tree_ensemble"
KIND_LINEAR = "linear"
TARGET = "log(price)"
N_FEATURES = len(FEATURES)

TREE_KEYS = (
    "tree_feature",
    "tree_threshold",
    "tree_left",
    "tree_right",
    "tree_value",
    "tree_cover",
    "tree_weight",
    "tree_float32",
    "bias",
)
LINEAR_KEYS = ("coef", "intercept", "center", "scale", "background_mean")

# Ordinal columns and their largest code; a code outside 0..max or not whole is a caller bug
# that a tree would silently route somewhere, so it is refused here as well as in validation.
_CODE_COLUMNS = np.array([FEATURES.index(f) for f in CATEGORIES], dtype=np.intp)
_CODE_MAX = np.array([len(CATEGORIES[f]) - 1 for f in CATEGORIES], dtype=np.float64)

# Stones per block when predicting many: keeps the (stones x trees) work arrays in cache.
_PREDICT_BLOCK_CELLS = 1 << 20
# (stones x leaves x features x quadrature points) per block when explaining many.
_EXPLAIN_BLOCK_CELLS = 1 << 21


class ModelFormatError(GemcastError):
    """A model file is not a gemcast model (not an npz, a pickle inside, wrong shapes, ...)."""


# --------------------------------------------------------------------------- linear design

DESIGN_VERSION = "gemcast-linear-v1"


def _design_spec() -> tuple[tuple[str, ...], np.ndarray]:
    names: list[str] = []
    owner: list[int] = []
    for i, f in enumerate(FEATURES):
        if f in CATEGORIES:
            # One-hot without the worst grade: the intercept carries it, so the columns are not
            # collinear and LinearRegression's coefficients stay unique.
            for level in CATEGORIES[f][1:]:
                names.append(f"{f}={level}")
                owner.append(i)
        elif f == "carat":
            names += ["carat", "log(carat)"]
            owner += [i, i]
        else:
            names.append(f)
            owner.append(i)
    return tuple(names), np.asarray(owner, dtype=np.intp)


DESIGN_COLUMNS, DESIGN_FEATURE = _design_spec()


def linear_design(X: np.ndarray) -> np.ndarray:
    """The linear model's design matrix: n x len(DESIGN_COLUMNS) float64.

    Per raw feature: carat gives ``carat`` and ``log(carat)`` (price grows like a power of
    weight, so log price is close to linear in log carat); each grade gives one indicator per
    level above the worst; depth, table, x, y, z pass through. Every column depends on one raw
    feature only (``DESIGN_FEATURE`` names which), which is what makes the linear model's
    explanation exact. Fit the linear model on this matrix (or put
    ``FunctionTransformer(linear_design)`` first in its Pipeline).
    """
    X = _as_matrix(X)
    carat = X[:, FEATURES.index("carat")]
    if np.any(carat <= 0):
        raise ValidationError("carat must be > 0", {"carat": "must be > 0"})
    cols: list[np.ndarray] = []
    for i, f in enumerate(FEATURES):
        if f in CATEGORIES:
            levels = np.arange(1, len(CATEGORIES[f]), dtype=np.float64)
            cols.append((X[:, i : i + 1] == levels).astype(np.float64))
        elif f == "carat":
            cols.append(np.stack([carat, np.log(carat)], axis=1))
        else:
            cols.append(X[:, i : i + 1])
    return np.concatenate(cols, axis=1)


# --------------------------------------------------------------------------- file format


def metadata_array(metadata: Mapping[str, Any]) -> np.ndarray:
    """Metadata as the uint8 array stored under ``META_KEY``."""
    text = json.dumps(dict(metadata), sort_keys=True, allow_nan=False)
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def read_metadata(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    if META_KEY not in arrays:
        raise ModelFormatError(f"no {META_KEY} array: not a gemcast model file")
    raw = np.asarray(arrays[META_KEY])
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFormatError(f"{META_KEY} must be a 1-D uint8 array of UTF-8 JSON")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{META_KEY} is not UTF-8 JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{META_KEY} must hold a JSON object")
    return meta


def save_model(arrays: Mapping[str, np.ndarray], metadata_update: Mapping[str, Any] | None = None) -> bytes:
    """The model file's bytes (a compressed npz) for arrays made by ``gemcast.export``.

    ``metadata_update`` adds keys to the stored metadata (a version, the data snapshot, ...).
    The result is checked by loading it, so a file that would be refused is never written.
    """
    out = dict(arrays)
    if metadata_update:
        meta = read_metadata(out)
        meta.update(metadata_update)
        out[META_KEY] = metadata_array(meta)
    for key, value in out.items():
        if np.asarray(value).dtype.hasobject:
            raise ModelFormatError(f"array {key!r} holds Python objects; a model file holds numbers only")
    buffer = io.BytesIO()
    payload: dict[str, Any] = {k: np.asarray(v) for k, v in out.items()}
    np.savez_compressed(buffer, **payload)
    data = buffer.getvalue()
    load_model(data)
    return data


def load_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a model file, refusing anything that is not a plain-number npz."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ModelFormatError(f"a model file is bytes, not {type(data).__name__}")
    stream = io.BytesIO(bytes(data))
    if not zipfile.is_zipfile(stream):
        raise ModelFormatError("not an npz archive (a model file is never a pickle)")
    stream.seek(0)
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(stream, allow_pickle=False) as npz:
            for key in npz.files:
                arrays[key] = npz[key]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        # numpy says "Object arrays cannot be loaded when allow_pickle=False" for pickles.
        raise ModelFormatError(f"unreadable model file: {exc}") from exc
    for key, value in arrays.items():
        if value.dtype.hasobject or value.dtype.kind not in "biuf":
            raise ModelFormatError(f"array {key!r} has dtype {value.dtype}; only numbers are allowed")
    return arrays


def load_model(data: bytes) -> Model:
    """A predictor from the bytes of a model file (see the module docstring for the format)."""
    arrays = load_arrays(data)
    return model_from_arrays(arrays)


def model_from_arrays(arrays: Mapping[str, np.ndarray]) -> Model:
    meta = read_metadata(arrays)
    if meta.get("format") != FORMAT:
        raise ModelFormatError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"format_version {meta.get('format_version')!r} is not {FORMAT_VERSION}")
    if tuple(meta.get("feature_names", ())) != FEATURES:
        raise ModelFormatError(f"feature_names {meta.get('feature_names')!r} are not {list(FEATURES)}")
    kind = meta.get("kind")
    if kind == KIND_TREES:
        return TreeEnsembleModel(arrays, meta)
    if kind == KIND_LINEAR:
        return LinearModel(arrays, meta)
    raise ModelFormatError(f"unknown model kind {kind!r}")


# --------------------------------------------------------------------------- models


def _as_matrix(X: Any) -> np.ndarray:
    """X as an n x 9 float64 array of finite values with whole, in-range grade codes."""
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != N_FEATURES:
        raise ValidationError(f"expected an n x {N_FEATURES} array of {', '.join(FEATURES)}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValidationError("features must be finite numbers (no NaN or infinity)")
    codes = arr[:, _CODE_COLUMNS]
    if not ((codes >= 0) & (codes <= _CODE_MAX) & (codes == np.round(codes))).all():
        raise ValidationError("cut, color and clarity must be whole ordinal codes within their grade lists")
    return arr


def _display_value(feature: str, value: float) -> Any:
    if feature in CATEGORIES:
        return CATEGORIES[feature][int(value)]
    return float(value)


class Model:
    """What every kind of model offers. Use :func:`load_model` to get one."""

    kind: str = ""

    def __init__(self, arrays: Mapping[str, np.ndarray], metadata: dict[str, Any]) -> None:
        self.arrays: dict[str, np.ndarray] = dict(arrays)
        self.metadata: dict[str, Any] = metadata
        self.feature_names: tuple[str, ...] = FEATURES

    # Subclasses fill these three.
    @property
    def n_trees(self) -> int:
        return 0

    @property
    def base_log(self) -> float:
        """The log price the explanation starts from (see ``explain``)."""
        raise NotImplementedError

    def predict_log(self, X: Any) -> np.ndarray:
        raise NotImplementedError

    def explain(self, X: Any) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    @property
    def base_price(self) -> float:
        """exp(base_log): the price the reasons start from."""
        return math.exp(self.base_log)

    def predict(self, X: Any) -> np.ndarray:
        """Prices in dollars: exp of ``predict_log``."""
        return np.exp(self.predict_log(X))

    def to_bytes(self) -> bytes:
        return save_model(self.arrays)

    def reasons(self, x_row: Any) -> list[dict[str, Any]]:
        """Why this stone costs what it costs, one entry per feature, largest effect first.

        ``effect_pct`` is the feature's multiplicative effect on the price, (exp(phi) - 1) * 100,
        where phi is its Shapley value in log price. ``effect_usd`` shares the dollar gap
        price - base_price among the features in proportion to phi: each gets
        phi * L, with L = (price - base_price) / (log price - log base_price) the logarithmic
        mean of the two prices (L = base_price when they are equal). The dollars therefore
        sum to price - base_price, and a feature's dollars carry the sign of its effect.
        """
        X = _as_matrix(x_row)
        if X.shape[0] != 1:
            raise ValidationError("reasons() explains one stone at a time")
        return self.reasons_batch(X)[0]["reasons"]

    def reasons_batch(self, X: Any) -> list[dict[str, Any]]:
        """``reasons`` for every row of X: ``[{"base_price", "reasons"}, ...]`` (one explain call)."""
        X = _as_matrix(X)
        base_log, phis = self.explain(X)
        base_price = math.exp(base_log)
        results: list[dict[str, Any]] = []
        for row, phi in zip(X, phis, strict=True):
            delta = float(phi.sum())
            # expm1(d)/d -> 1 as d -> 0; written this way it never divides 0 by 0.
            log_mean = base_price * (math.expm1(delta) / delta if delta != 0.0 else 1.0)
            out = [
                {
                    "feature": f,
                    "value": _display_value(f, row[i]),
                    "effect_pct": math.expm1(float(phi[i])) * 100.0,
                    "effect_usd": float(phi[i]) * log_mean,
                }
                for i, f in enumerate(FEATURES)
            ]
            out.sort(key=lambda r: abs(r["effect_usd"]), reverse=True)
            results.append({"base_price": base_price, "reasons": out})
        return results

    def summary(self) -> dict[str, Any]:
        """Small JSON-able description: kind, features, trees, base price, components."""
        return {
            "kind": self.kind,
            "feature_names": list(self.feature_names),
            "n_trees": self.n_trees,
            "base_price": self.base_price,
            "components": self.metadata.get("components", []),
        }


def _require(arrays: Mapping[str, np.ndarray], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ModelFormatError(f"model file lacks arrays {missing}")


class TreeEnsembleModel(Model):
    """bias + sum over trees of weight * leaf value, explained by path-dependent TreeSHAP.

    Prediction walks every tree at once: the state is one node index per (stone, tree), and
    each of ``max_depth`` steps is a handful of numpy gathers over that array (leaves point
    to themselves, so shallower trees simply stay put).

    Explanation (why it is exact and honest): the value of a coalition S of features is
    Lundberg et al.'s "tree_path_dependent" conditional expectation: at a split on a feature in
    S follow x, at a split on a feature outside S average the two children weighted by the
    training cover that went each way. Expanded over leaves this is
    v(S) = bias + sum_l value_l * prod_f (a_lf if f in S else b_lf), where a_lf = 1 when x
    satisfies every split on f along the leaf's path (x_f in (lo_lf, hi_lf]) and b_lf is the
    product of the cover ratios of those splits. For one leaf the game is a product game, whose
    Shapley value is phi_i = (a_i - b_i) * sum_k w_k e_k(others), w_k = k!(n-1-k)!/n!. Since
    w_k = integral_0^1 t^k (1-t)^(n-1-k) dt, phi_i = (a_i - b_i) * integral_0^1
    prod_{j != i} (b_j + (a_j - b_j) t) dt: the integral of a polynomial of degree < 9, which
    Gauss-Legendre quadrature with ceil(k/2) <= 5 points computes exactly (k = the number of
    features on the leaf's path; the others are null players and drop out). Summing over
    leaves (the game is linear in leaves) gives the exact Shapley values of the model's own
    prediction; they add up to predict_log(x) - base_log, where base_log = v(empty set), the
    cover-weighted mean of the trees' leaves. Nothing is sampled or approximated.
    """

    kind = KIND_TREES

    def __init__(self, arrays: Mapping[str, np.ndarray], metadata: dict[str, Any]) -> None:
        super().__init__(arrays, metadata)
        _require(arrays, TREE_KEYS)
        feature = np.asarray(arrays["tree_feature"])
        T, M = feature.shape if feature.ndim == 2 else (0, 0)
        if T == 0 or M == 0:
            raise ModelFormatError("tree_feature must be a non-empty (trees x nodes) array")
        for key in ("tree_threshold", "tree_left", "tree_right", "tree_value", "tree_cover"):
            if np.shape(arrays[key]) != (T, M):
                raise ModelFormatError(f"{key} has shape {np.shape(arrays[key])}, expected {(T, M)}")
        for key in ("tree_weight", "tree_float32"):
            if np.shape(arrays[key]) != (T,):
                raise ModelFormatError(f"{key} has shape {np.shape(arrays[key])}, expected {(T,)}")
        if np.shape(arrays["bias"]) != ():
            raise ModelFormatError("bias must be a scalar")
        feature = feature.astype(np.intp)
        left = np.asarray(arrays["tree_left"]).astype(np.intp)
        right = np.asarray(arrays["tree_right"]).astype(np.intp)
        threshold = np.asarray(arrays["tree_threshold"], dtype=np.float64)
        value = np.asarray(arrays["tree_value"], dtype=np.float64)
        cover = np.asarray(arrays["tree_cover"], dtype=np.float64)
        weight = np.asarray(arrays["tree_weight"], dtype=np.float64)
        as32 = np.asarray(arrays["tree_float32"]).astype(bool)
        split = feature >= 0
        node = np.arange(M)[None, :]
        if np.any(feature >= N_FEATURES) or np.any(feature < -1):
            raise ModelFormatError("tree_feature holds an unknown feature index")
        # Children after their parent: no cycles, and a walk of M steps always ends.
        if np.any(split & ((left <= node) | (right <= node) | (left >= M) | (right >= M))):
            raise ModelFormatError("tree_left/tree_right must point forward within the tree")
        if np.any(split & np.isnan(threshold)):
            raise ModelFormatError("tree_threshold is NaN at a split")
        if not (np.isfinite(value).all() and np.isfinite(weight).all() and np.isfinite(cover).all()):
            raise ModelFormatError("tree values, weights and covers must be finite")
        if np.any(cover < 0):
            raise ModelFormatError("tree_cover must be >= 0")

        self._T, self._M = T, M
        self._feature, self._left, self._right = feature, left, right
        self._threshold, self._value, self._cover = threshold, value, cover
        self._weight, self._as32 = weight, as32
        self._bias = float(arrays["bias"])
        self._any32 = bool(as32.any())

        # Flat, doubled layout for the walk: position 2*i and 2*i+1 both describe node i, and
        # child2[2*i + went_right] is the doubled index of the next node. Leaves point to
        # themselves with threshold +inf, so the comparison keeps them where they are.
        flat = (np.arange(T)[:, None] * M + np.arange(M)[None, :]).ravel()
        fsplit = split.ravel()
        gfeat = np.where(split, feature + N_FEATURES * as32[:, None], 0).ravel()
        gthr = np.where(split, threshold, np.inf).ravel()
        lchild = np.where(fsplit, (np.arange(T)[:, None] * M + left).ravel(), flat)
        rchild = np.where(fsplit, (np.arange(T)[:, None] * M + right).ravel(), flat)
        self._gfeat2 = np.repeat(gfeat, 2)
        self._gthr2 = np.repeat(gthr, 2)
        child2 = np.empty(2 * T * M, dtype=np.intp)
        child2[0::2] = 2 * lchild
        child2[1::2] = 2 * rchild
        self._child2 = child2
        weighted = np.where(split, 0.0, value * weight[:, None]).ravel()
        self._val2 = np.repeat(weighted, 2)
        self._roots2 = 2 * np.arange(T, dtype=np.intp) * M
        self._leaf2 = np.repeat(~fsplit, 2)
        self._depth = self._max_depth()
        self._leaves: dict[str, Any] | None = None
        self._base_log: float | None = None

    def _max_depth(self) -> int:
        """Longest root-to-leaf path, found by walking all trees level by level."""
        frontier = np.arange(self._T) * self._M
        depth = 0
        feat = self._feature.ravel()
        while True:
            frontier = frontier[feat[frontier] >= 0]
            if frontier.size == 0:
                return depth
            t = frontier // self._M
            frontier = np.concatenate(
                [t * self._M + self._left.ravel()[frontier], t * self._M + self._right.ravel()[frontier]]
            )
            depth += 1

    @property
    def n_trees(self) -> int:
        return self._T

    @property
    def max_depth(self) -> int:
        return self._depth

    def _augmented(self, X: np.ndarray) -> np.ndarray:
        # Columns 9..17 hold float32(x): sklearn's DecisionTree casts X to float32 before it
        # compares, and a threshold can fall between x and float32(x).
        if not self._any32:
            return X
        return np.concatenate([X, X.astype(np.float32).astype(np.float64)], axis=1)

    def predict_log(self, X: Any) -> np.ndarray:
        """log(price) for an n x 9 array (or one row of 9)."""
        X = _as_matrix(X)
        Xa = self._augmented(X)
        n, width = Xa.shape
        out = np.empty(n, dtype=np.float64)
        block = max(1, _PREDICT_BLOCK_CELLS // self._T)
        gfeat, gthr, child2, leaf2 = self._gfeat2, self._gthr2, self._child2, self._leaf2
        T = self._T
        for start in range(0, n, block):
            xa = Xa[start : start + block]
            c = xa.shape[0]
            xflat = xa.ravel()
            # One entry per (stone, tree) still walking: its node, its stone's offset in xflat,
            # and where its leaf goes in `final`. Boosted trees here are long chains (depth 25+
            # while most stones stop by level 10), so finished pairs are dropped now and then.
            j = np.tile(self._roots2, c)
            off = np.repeat(np.arange(c, dtype=np.intp) * width, T)
            pos = np.arange(c * T, dtype=np.intp)
            final = np.empty(c * T, dtype=np.intp)
            for level in range(1, self._depth + 1):
                j = child2[j + (xflat[gfeat[j] + off] > gthr[j])]
                if level >= 6 and level % 3 == 0 and level < self._depth:
                    done = leaf2[j]
                    n_done = int(np.count_nonzero(done))
                    if n_done * 4 > j.size:
                        final[pos[done]] = j[done]
                        walking = ~done
                        j, off, pos = j[walking], off[walking], pos[walking]
            final[pos] = j
            out[start : start + c] = self._val2[final].reshape(c, T).sum(axis=1)
        out += self._bias
        return out

    # ---- explanation

    def _leaf_table(self) -> dict[str, Any]:
        """Per leaf: weighted value, per-feature path interval (lo, hi] and cover product b."""
        if self._leaves is not None:
            return self._leaves
        T, M, F = self._T, self._M, N_FEATURES
        feat, left, right = self._feature.ravel(), self._left.ravel(), self._right.ravel()
        thr, cover = self._threshold.ravel(), self._cover.ravel()
        node = np.arange(T) * M
        lo = np.full((T, F), -np.inf)
        hi = np.full((T, F), np.inf)
        b = np.ones((T, F))
        out_node, out_lo, out_hi, out_b = [], [], [], []
        while node.size:
            leaf = feat[node] < 0
            out_node.append(node[leaf])
            out_lo.append(lo[leaf])
            out_hi.append(hi[leaf])
            out_b.append(b[leaf])
            node, lo, hi, b = node[~leaf], lo[~leaf], hi[~leaf], b[~leaf]
            if not node.size:
                break
            t = node // M
            f = feat[node]
            ln, rn = t * M + left[node], t * M + right[node]
            cl, cr = cover[ln], cover[rn]
            total = cl + cr
            # A split no training sample reached (possible only with zero sample weights)
            # has no cover to average by; it is split evenly.
            safe = np.where(total > 0, total, 1.0)
            rl = np.where(total > 0, cl / safe, 0.5)
            rr = np.where(total > 0, cr / safe, 0.5)
            rows = np.arange(node.size)
            lo_l, hi_l, b_l = lo.copy(), hi.copy(), b.copy()
            hi_l[rows, f] = np.minimum(hi_l[rows, f], thr[node])
            b_l[rows, f] *= rl
            lo_r, hi_r, b_r = lo.copy(), hi, b
            lo_r[rows, f] = np.maximum(lo_r[rows, f], thr[node])
            b_r[rows, f] *= rr
            node = np.concatenate([ln, rn])
            lo = np.concatenate([lo_l, lo_r])
            hi = np.concatenate([hi_l, hi_r])
            b = np.concatenate([b_l, b_r])
        leaf_node = np.concatenate(out_node)
        leaf_lo = np.concatenate(out_lo)
        leaf_hi = np.concatenate(out_hi)
        leaf_b = np.concatenate(out_b)
        tree = leaf_node // M
        value = self._value.ravel()[leaf_node] * self._weight[tree]
        on_path = np.isfinite(leaf_lo) | np.isfinite(leaf_hi)
        k = on_path.sum(axis=1)
        # Only (leaf, feature) pairs on the leaf's path matter (elsewhere a = b = 1: a null
        # player). Leaves are grouped by how many quadrature points their integrand needs:
        # its degree is at most k - 1, and q points are exact up to degree 2q - 1.
        q_of_leaf = (k + 1) // 2
        groups = []
        for q in range(1, int(q_of_leaf.max(initial=0)) + 1):
            leaves = np.flatnonzero(q_of_leaf == q)
            if leaves.size == 0:
                continue
            rows, feats = np.nonzero(on_path[leaves])  # row-major: entries sorted by leaf
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            gl = leaves[rows]
            b = leaf_b[gl, feats]
            gx, gw = np.polynomial.legendre.leggauss(q)
            t = (gx + 1.0) / 2.0
            w = gw / 2.0
            g1 = b[:, None] + (1.0 - b)[:, None] * t  # > 0 for t in (0, 1)
            groups.append(
                {
                    "leaf": rows,  # entry -> leaf within the group
                    "starts": starts,
                    # Column of the stone's augmented row: float32 x for sklearn trees.
                    "column": feats + N_FEATURES * self._as32[tree[gl]],
                    "feature": feats,
                    "lo": leaf_lo[gl, feats],
                    "hi": leaf_hi[gl, feats],
                    "b": b,
                    "t": t,
                    "vw": value[leaves, None] * w[None, :],
                    "g1": g1,
                    "g0": b[:, None] * (1.0 - t),
                    "h1": (1.0 - b)[:, None] / g1,
                    "inv1mt": 1.0 / (1.0 - t),
                }
            )
        self._leaves = {
            "groups": groups,
            "n_leaves": int(leaf_node.size),
            "base": self._bias + float((value * leaf_b.prod(axis=1)).sum()),
        }
        return self._leaves

    @property
    def base_log(self) -> float:
        """Cover-weighted mean log price: v(empty set) of the path-dependent game."""
        return float(self._leaf_table()["base"])

    def explain(self, X: Any) -> tuple[float, np.ndarray]:
        """(base_log, phi): exact path-dependent Shapley values, phi of shape n x 9.

        phi[i].sum() == predict_log(X)[i] - base_log up to floating point rounding.
        """
        X = _as_matrix(X)
        lt = self._leaf_table()
        n = X.shape[0]
        Xa = np.concatenate([X, X.astype(np.float32).astype(np.float64)], axis=1)
        phi = np.zeros((n, N_FEATURES))
        cells = max(1, sum(g["lo"].size * g["t"].size for g in lt["groups"]))
        block = max(1, _EXPLAIN_BLOCK_CELLS // cells)
        for start in range(0, n, block):
            xa = Xa[start : start + block]
            s = xa.shape[0]
            flat = np.zeros(s * N_FEATURES)
            for g in lt["groups"]:
                xv = xa[:, g["column"]]
                on = (xv > g["lo"]) & (xv <= g["hi"])
                # g_j(t) = b_j + (a_j - b_j) t, i.e. g1 where x follows the path, else g0;
                # P = its product over the leaf's path features.
                P = np.multiply.reduceat(np.where(on[..., None], g["g1"], g["g0"]), g["starts"], axis=1)
                Mq = P * g["vw"]
                # a_i = 1: (1 - b_i) prod_{j!=i} g_j = P * h1_i.
                # a_i = 0: -b_i prod_{j!=i} g_j = -P / (1 - t)  (because g_i = b_i (1 - t)).
                with_i = np.einsum("seq,eq->se", np.take(Mq, g["leaf"], axis=1), g["h1"])
                without_i = np.take(Mq @ g["inv1mt"], g["leaf"], axis=1)
                a = on.astype(np.float64)
                contrib = a * with_i - (1.0 - a) * without_i
                index = (np.arange(s)[:, None] * N_FEATURES + g["feature"]).ravel()
                flat += np.bincount(index, weights=contrib.ravel(), minlength=s * N_FEATURES)
            phi[start : start + s] = flat.reshape(s, N_FEATURES)
        return self.base_log, phi


class LinearModel(Model):
    """log_price = ((linear_design(X) - center) / scale) @ coef + intercept.

    Explanation (why it is exact and honest): every design column depends on one raw feature,
    so the model is a sum of one function per feature, g_f(x_f). For such a model the
    interventional Shapley value against the training data as background is
    phi_f = g_f(x_f) - mean over the training data of g_f, i.e. the sum over f's design
    columns of coef_c / scale_c * (design_c(x) - background_mean_c); base_log is the prediction
    at the background mean. Interactions do not exist in this model, so there is nothing to
    apportion and no choice in the method.
    """

    kind = KIND_LINEAR

    def __init__(self, arrays: Mapping[str, np.ndarray], metadata: dict[str, Any]) -> None:
        super().__init__(arrays, metadata)
        _require(arrays, LINEAR_KEYS)
        if metadata.get("design") != DESIGN_VERSION:
            raise ModelFormatError(f"linear design {metadata.get('design')!r} is not {DESIGN_VERSION!r}")
        D = len(DESIGN_COLUMNS)
        for key in ("coef", "center", "scale", "background_mean"):
            if np.shape(arrays[key]) != (D,):
                raise ModelFormatError(f"{key} has shape {np.shape(arrays[key])}, expected {(D,)}")
        if np.shape(arrays["intercept"]) != ():
            raise ModelFormatError("intercept must be a scalar")
        self._coef = np.asarray(arrays["coef"], dtype=np.float64)
        self._center = np.asarray(arrays["center"], dtype=np.float64)
        self._scale = np.asarray(arrays["scale"], dtype=np.float64)
        self._bg = np.asarray(arrays["background_mean"], dtype=np.float64)
        self._intercept = float(arrays["intercept"])
        stacked = np.concatenate([self._coef, self._center, self._scale, self._bg])
        if not np.isfinite(stacked).all() or np.any(self._scale == 0):
            raise ModelFormatError("linear arrays must be finite with non-zero scale")
        # Column c belongs to raw feature DESIGN_FEATURE[c]: summing contributions per feature.
        self._group = np.zeros((D, N_FEATURES))
        self._group[np.arange(D), DESIGN_FEATURE] = 1.0
        self._slope = self._coef / self._scale
        self._base = float(((self._bg - self._center) / self._scale) @ self._coef + self._intercept)

    @property
    def base_log(self) -> float:
        return self._base

    def predict_log(self, X: Any) -> np.ndarray:
        design = linear_design(X)
        design -= self._center
        design /= self._scale
        return design @ self._coef + self._intercept

    def explain(self, X: Any) -> tuple[float, np.ndarray]:
        """(base_log, phi): exact interventional Shapley values per raw feature, n x 9."""
        design = linear_design(X)
        return self._base, ((design - self._bg) * self._slope) @ self._group
