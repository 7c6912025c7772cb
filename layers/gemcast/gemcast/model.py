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

Two more metadata keys travel with the model they describe (absent in older files, which
then answer without them): ``intervals``, the price-range table calibrated on rows the model
never trained on (``gemcast.intervals``: method, bin edges in predicted log price, and per
coverage the half-width per bin), and ``typical_stone``, the training data's median stone,
which the grouped reasons compare a stone with (``gemcast.reasons``).

Every model predicts ``log(price)`` from the 9 features in ``schema.FEATURES`` order, with
cut, color and clarity as ordinal codes (worst = 0): callers always pass those raw n x 9 rows.

A tree model's *inputs* may add derived columns computed from the raw features: the metadata
key ``input_names`` lists them in column order (for example ``DEFAULT_INPUTS``, the 9 features
then ``"x/y"``), and :func:`model_inputs` builds that matrix, the one function that training
and prediction both call. A derived input is one of ``DERIVED_INPUTS``; a file naming one this
code does not know is refused. A file without ``input_names`` (written before they existed)
uses the 9 features. Explanations are Shapley values over the inputs, so a derived input gets
its own reason.

Two kinds exist:

``tree_ensemble``: a weighted sum of regression trees plus a constant. One format holds a
HistGradientBoostingRegressor, a random forest, extra trees, a GradientBoostingRegressor, a
single tree, or a weighted average of several of them (their trees concatenated, each tree's
weight multiplied by its model's weight, the constants averaged into one bias). A blend is
therefore evaluated and explained as one ensemble: the sum of the members' trees is a tree
ensemble, and its exact Shapley values are the weighted sums of the members' (``components``
lists each member with its weight and tree count, in tree order)::

    tree_feature   int32   (T, M)  input index (into input_names) of a split node; -1 at leaves
                                   and padding
    tree_threshold float64 (T, M)  x goes left when x <= threshold (HGB and sklearn trees alike)
    tree_left      int32   (T, M)  child node index within the tree; -1 at leaves
    tree_right     int32   (T, M)
    tree_value     float64 (T, M)  node value; only leaves' values are used to predict
    tree_cover     float64 (T, M)  training samples (weighted) that reached the node
    tree_weight    float64 (T,)    prediction = bias + sum_t weight_t * value_t(leaf of x)
    tree_float32   bool    (T,)    compare float32(x) with the threshold, as sklearn's
                                   DecisionTree does (HGB compares float64 x)
    bias           float64 ()

``linear`` (always on the 9 raw features; no ``input_names``):
``log_price = ((linear_design(X) - center) / scale) @ coef + intercept``, arrays
``coef``, ``center``, ``scale``, ``background_mean`` (the mean of the design columns over the
training data), all ``(D,)`` float64, and ``intercept`` ``()``; the design is
:func:`linear_design` (``DESIGN_VERSION``, named column by column in the metadata), the one
function that training and prediction both call, so they cannot drift apart.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gemcast import tree_walk, treeshap_kernel
from gemcast.errors import GemcastError, ValidationError
from gemcast.schema import CATEGORIES, DERIVED_INPUT_NAMES, DESCRIPTIONS, FEATURES

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

# Fewer stones than this take the compiled walk (gemcast.tree_walk) once it is built (see
# TreeEnsembleModel.compiled_walk): for them it costs about half of onnxruntime's call. Larger
# batches go to onnxruntime when it is installed and checks out (see _OnnxTrees), else to the
# compiled walk; the numpy walk is what remains without either.
COMPILED_MAX_ROWS = 16

_log = logging.getLogger(__name__)

# Stones per block when predicting many: keeps the (stones x trees) work arrays in cache.
_PREDICT_BLOCK_CELLS = 1 << 20
# (stones x leaves x path slots) per block when explaining many: about 64 MiB per work array.
_EXPLAIN_BLOCK_CELLS = 1 << 23


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


# --------------------------------------------------------------------------- model inputs


@dataclass(frozen=True)
class DerivedInput:
    """A model input computed from the raw features (a column the trees may split on)."""

    name: str
    label: str
    description: str
    compute: Callable[[np.ndarray], np.ndarray]  # checked raw n x 9 rows -> n values


_CARAT, _X, _Y, _Z, _DEPTH = (FEATURES.index(f) for f in ("carat", "x", "y", "z", "depth"))


def _length_over_width(X: np.ndarray) -> np.ndarray:
    # y > 0 for every valid stone (schema and cleaning refuse dimensions <= 0); model_inputs
    # refuses the infinity a zero would give.
    with np.errstate(divide="ignore", invalid="ignore"):
        return X[:, _X] / X[:, _Y]


def _carat_per_volume(X: np.ndarray) -> np.ndarray:
    # x, y, z > 0 for every valid stone; model_inputs refuses the infinity a zero would give.
    with np.errstate(divide="ignore", invalid="ignore"):
        return X[:, _CARAT] / (X[:, _X] * X[:, _Y] * X[:, _Z])


def _box_volume(X: np.ndarray) -> np.ndarray:
    return X[:, _X] * X[:, _Y] * X[:, _Z]


def _mean_diameter(X: np.ndarray) -> np.ndarray:
    return (X[:, _X] + X[:, _Y]) / 2.0


def _spread(X: np.ndarray) -> np.ndarray:
    # carat > 0 for every valid stone.
    return (X[:, _X] + X[:, _Y]) / 2.0 / np.cbrt(X[:, _CARAT])


def _depth_gap(X: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return X[:, _DEPTH] - 200.0 * X[:, _Z] / (X[:, _X] + X[:, _Y])


# The registry of derived inputs. A name here is part of the file format: change what one
# computes and every model file that lists it predicts something else, so add a new name
# instead.
#   "x/y"  length over width, x / y. Round brilliants sit at 1.0; ovals, pears, marquises,
#          emeralds run well above 1. Shape moves price at equal weight and grade, and the
#          trees find the ratio far more easily than the x-y interaction (6.0% -> 5.7% MAPE).
#   "carat/xyz"  carats per mm^3 of the x*y*z box: how heavy the stone is for its
#          measurements (a deep or thick-girdled stone carries weight that does not show
#          face-up, and is priced below its weight; $258 -> $254 MAE).
#   "xyz"  the x*y*z box in mm^3 and "(x+y)/2" the mean diameter in mm: size as measured,
#          beside the weighed carat (with the next two, about $4 of MAE at equal trees).
#   "spread"  mean diameter over the cube root of the carat: how large the stone looks face-up
#          for its weight, what a gemologist calls spread (a shallow stone spreads wide).
#   "depth_gap"  stated depth % minus 2z/(x+y) %: a stated depth that the measurements do not
#          bear out (a rounding of the grading report, or an out-of-round girdle).
DERIVED_INPUTS: dict[str, DerivedInput] = {
    "x/y": DerivedInput(
        "x/y", "length / width", "length / width: how round the stone is", _length_over_width
    ),
    "carat/xyz": DerivedInput(
        "carat/xyz", "weight for its size", "carats per cubic mm of x * y * z: weight hidden in the stone",
        _carat_per_volume,
    ),
    "xyz": DerivedInput("xyz", "measured volume", "x * y * z in cubic mm: the size the measurements give", _box_volume),
    "(x+y)/2": DerivedInput("(x+y)/2", "diameter", "mean of length and width in mm", _mean_diameter),
    "spread": DerivedInput(
        "spread", "spread", "mean diameter / cube root of carat: how large it looks for its weight", _spread
    ),
    "depth_gap": DerivedInput(
        "depth_gap", "depth check", "stated depth % minus the depth % the measurements give", _depth_gap
    ),
}

DEFAULT_INPUTS: tuple[str, ...] = FEATURES + ("x/y", "carat/xyz")
if tuple(DERIVED_INPUTS) != DERIVED_INPUT_NAMES:  # pragma: no cover - a coding slip, caught at import
    raise ModelFormatError(f"schema.DERIVED_INPUT_NAMES {DERIVED_INPUT_NAMES} != {tuple(DERIVED_INPUTS)}")

_RAW_LABELS: dict[str, str] = {
    "carat": "weight",
    "cut": "cut",
    "color": "color",
    "clarity": "clarity",
    "depth": "depth %",
    "table": "table %",
    "x": "length",
    "y": "width",
    "z": "height",
}


def input_label(name: str) -> str:
    """A short human name for a model input ("width", "length / width")."""
    return DERIVED_INPUTS[name].label if name in DERIVED_INPUTS else _RAW_LABELS.get(name, name)


def input_description(name: str) -> str:
    """One line saying what a model input measures."""
    return DERIVED_INPUTS[name].description if name in DERIVED_INPUTS else DESCRIPTIONS.get(name, name)


def check_input_names(input_names: Any) -> tuple[str, ...]:
    """input_names as a tuple, refusing unknown or repeated names (ModelFormatError)."""
    if isinstance(input_names, str) or not all(isinstance(n, str) for n in input_names):
        raise ModelFormatError(f"input_names must be a list of names, got {input_names!r}")
    names = tuple(input_names)
    unknown = [n for n in names if n not in FEATURES and n not in DERIVED_INPUTS]
    if not names or unknown or len(set(names)) != len(names):
        raise ModelFormatError(
            f"input_names {list(names)} must be distinct names from "
            f"{list(FEATURES)} or {list(DERIVED_INPUTS)}"
        )
    return names


def model_inputs(X_raw: Any, input_names: Sequence[str] = DEFAULT_INPUTS) -> np.ndarray:
    """The model's input matrix, n x len(input_names) float64, from raw n x 9 rows.

    Raw features are copied by name; derived ones are computed (``DERIVED_INPUTS``). Fit a tree
    model on ``model_inputs(X, names)`` and export it with ``input_names=names``.
    """
    X = _as_matrix(X_raw)
    names = check_input_names(input_names)
    if names == FEATURES:
        return X
    out = np.empty((X.shape[0], len(names)))
    for j, name in enumerate(names):
        out[:, j] = X[:, FEATURES.index(name)] if name in FEATURES else DERIVED_INPUTS[name].compute(X)
    if not np.isfinite(out).all():
        bad = [n for j, n in enumerate(names) if not np.isfinite(out[:, j]).all()]
        raise ValidationError(f"{', '.join(bad)} cannot be computed for some stone (is a dimension 0?)")
    return out


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


class Model:
    """What every kind of model offers. Use :func:`load_model` to get one."""

    kind: str = ""

    def __init__(self, arrays: Mapping[str, np.ndarray], metadata: dict[str, Any]) -> None:
        self.arrays: dict[str, np.ndarray] = dict(arrays)
        self.metadata: dict[str, Any] = metadata
        self.feature_names: tuple[str, ...] = FEATURES
        # The columns the model computes on and explains (see model_inputs).
        self.input_names: tuple[str, ...] = FEATURES

    def fast_predictor(self) -> Any:
        """A compiled predictor for batches, or None (a linear model needs none)."""
        return None

    def compiled_walk(self) -> Any:
        """A compiled predictor for a few stones, or None (a linear model needs none)."""
        return None

    # Subclasses fill these.
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
        """(base_log, phi): Shapley values in log price, n x len(input_names).

        phi[i].sum() == predict_log(X)[i] - base_log up to floating point rounding.
        """
        return self._explain_inputs(model_inputs(X, self.input_names))

    def _explain_inputs(self, Z: np.ndarray) -> tuple[float, np.ndarray]:
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
        """Why this stone costs what it costs, one entry per model input, largest effect first.

        Each entry: ``feature`` (the input's name, e.g. ``"carat"`` or ``"x/y"``), ``label`` and
        ``description`` (for people), ``value`` (the stone's value; a grade's name for cut,
        color and clarity), ``effect_pct`` and ``effect_usd``.

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

    def reasons_batch(self, X: Any, *, decimals: int | None = None) -> list[dict[str, Any]]:
        """``reasons`` for every row of X: ``[{"base_price", "reasons"}, ...]`` (one explain call).

        The effects are computed on arrays, for the whole batch at once; ``decimals`` rounds the
        dollars and percentages (and base_price) as an answer shows them.
        """
        Z = model_inputs(X, self.input_names)
        base_log, phis = self._explain_inputs(Z)
        base_price = math.exp(base_log)
        names = self.input_names
        delta = phis.sum(axis=1)
        # expm1(d)/d -> 1 as d -> 0; written this way it never divides 0 by 0.
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(delta != 0.0, np.expm1(delta) / np.where(delta != 0.0, delta, 1.0), 1.0)
        usd = phis * (base_price * scale)[:, None]
        pct = np.expm1(phis) * 100.0
        # Largest effect first; a stable sort keeps input order among equal effects.
        order = np.argsort(-np.abs(usd), axis=1, kind="stable")
        shown_base = round(base_price, decimals) if decimals is not None else base_price
        if decimals is not None:
            usd, pct = np.round(usd, decimals), np.round(pct, decimals)
        labels = [(input_label(f), input_description(f)) for f in names]
        shown: list[list[Any]] = []
        for j, f in enumerate(names):
            column = Z[:, j]
            if f in CATEGORIES:
                grades = CATEGORIES[f]
                shown.append([grades[int(v)] for v in column.tolist()])
            else:
                shown.append(column.tolist())
        usd_rows, pct_rows, order_rows = usd.tolist(), pct.tolist(), order.tolist()
        results: list[dict[str, Any]] = []
        for i, (u, p, o) in enumerate(zip(usd_rows, pct_rows, order_rows, strict=True)):
            out = [
                {
                    "feature": names[j],
                    "label": labels[j][0],
                    "description": labels[j][1],
                    "value": shown[j][i],
                    "effect_pct": p[j],
                    "effect_usd": u[j],
                }
                for j in o
            ]
            results.append({"base_price": shown_base, "reasons": out})
        return results

    def summary(self) -> dict[str, Any]:
        """Small JSON-able description: kind, features, trees, base price, components."""
        return {
            "kind": self.kind,
            "feature_names": list(self.feature_names),
            "input_names": list(self.input_names),
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

    Two kernels compute this sum: the compiled one of ``gemcast.treeshap_kernel`` (numba, in the
    serving image; per-leaf tables of phi for every pattern of a, filled by the same quadrature)
    and, where numba is missing (the Lambda layer), the numpy one below. Tests check both
    against brute force.
    """

    kind = KIND_TREES

    def __init__(self, arrays: Mapping[str, np.ndarray], metadata: dict[str, Any]) -> None:
        super().__init__(arrays, metadata)
        _require(arrays, TREE_KEYS)
        self.input_names = check_input_names(metadata.get("input_names", FEATURES))
        F = self._F = len(self.input_names)
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
        if np.any(feature >= F) or np.any(feature < -1):
            raise ModelFormatError(f"tree_feature holds an input index outside 0..{F - 1} (input_names)")
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
        gfeat = np.where(split, feature + F * as32[:, None], 0).ravel()
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
        self._fast: _OnnxTrees | None = None
        self._fast_tried = False
        self._compiled: tree_walk.CompiledTrees | None = None
        self._compiled_tried = False

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

    def _augmented(self, Z: np.ndarray, always: bool = False) -> np.ndarray:
        # Columns F..2F-1 hold float32(z): sklearn's DecisionTree casts X to float32 before it
        # compares, and a threshold can fall between z and float32(z).
        if not (self._any32 or always):
            return Z
        return np.concatenate([Z, Z.astype(np.float32).astype(np.float64)], axis=1)

    def predict_log(self, X: Any) -> np.ndarray:
        """log(price) for an n x 9 array of raw features (or one row of 9)."""
        Za = self._augmented(model_inputs(X, self.input_names))
        fast = self.fast_predictor()
        compiled = self._compiled  # once compiled_walk() built it (the model server does, at start)
        if compiled is not None and (Za.shape[0] < COMPILED_MAX_ROWS or fast is None):
            return tree_walk.by_row_blocks(compiled.predict, Za)
        if fast is not None:
            return tree_walk.by_row_blocks(fast.predict, Za)
        return self._walk(Za)

    def fast_predictor(self) -> _OnnxTrees | None:
        """The onnxruntime predictor for batches, built and checked at first use; None without it."""
        if not self._fast_tried:
            self._fast = _OnnxTrees.build(self)
            self._fast_tried = True
        return self._fast

    def compiled_walk(self) -> tree_walk.CompiledTrees | None:
        """The compiled walk (gemcast.tree_walk) over these trees, built (and compiled) here; None
        without numba. predict_log takes it once built: the model server builds it at start,
        while a scoring run, all large batches, never imports numba for it."""
        if not self._compiled_tried:
            self._compiled_tried = True
            self._compiled = tree_walk.CompiledTrees.build(
                feature=self._feature, threshold=self._threshold, left=self._left, right=self._right,
                leaf_value=self._value * self._weight[:, None], columns_of=self._F * self._as32.astype(np.intp),
                bias=self._bias)
        return self._compiled

    def _walk(self, Xa: np.ndarray) -> np.ndarray:
        """The numpy walk: log(price) for rows of (augmented) inputs."""
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

    def _leaf_paths(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every leaf: (node index, per-input path interval lo, hi, cover product b)."""
        T, M, F = self._T, self._M, self._F
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
        return tuple(np.concatenate(part) for part in (out_node, out_lo, out_hi, out_b))  # type: ignore[return-value]

    def _leaf_table(self) -> dict[str, Any]:
        """The explanation's tables, built once: leaves grouped by quadrature size, dense."""
        if self._leaves is not None:
            return self._leaves
        F = self._F
        leaf_node, leaf_lo, leaf_hi, leaf_b = self._leaf_paths()
        tree = leaf_node // self._M
        value = self._value.ravel()[leaf_node] * self._weight[tree]
        on_path = np.isfinite(leaf_lo) | np.isfinite(leaf_hi)
        k = on_path.sum(axis=1)
        # Only (leaf, input) pairs on the leaf's path matter (elsewhere a = b = 1: a null
        # player). Leaves are grouped by how many quadrature points their integrand needs: its
        # degree is at most k - 1, and q points are exact up to degree 2q - 1. Within a group
        # every leaf has k = 2q - 1 or 2q path inputs, stored densely in K = 2q slots (a spare
        # slot is a null player that matches every stone and adds nothing).
        q_of_leaf = (k + 1) // 2
        groups = []
        # The numpy kernel's tables, needed only where the compiled kernel is not.
        numpy_q = 0 if treeshap_kernel.kernel() is not None else int(q_of_leaf.max(initial=0))
        for q in range(1, numpy_q + 1):
            leaves = np.flatnonzero(q_of_leaf == q)
            if leaves.size == 0:
                continue
            K, L = 2 * q, leaves.size
            rows, feats = np.nonzero(on_path[leaves])  # row-major: entries sorted by leaf
            starts = np.r_[0, np.cumsum(k[leaves])[:-1]]
            slot = np.arange(rows.size) - starts[rows]
            gl = leaves[rows]
            gx, gw = np.polynomial.legendre.leggauss(q)
            t = (gx + 1.0) / 2.0
            w = gw / 2.0
            b = leaf_b[gl, feats]
            # g_j(t) = b_j + (a_j - b_j) t is g1 = b + (1 - b) t where the stone follows the
            # leaf's path on input j (a_j = 1) and g0 = b (1 - t) where it does not. Products
            # of g are sums of logs: log P = sum_j log g0_j + sum_{j: a_j = 1} (log g1_j - log g0_j),
            # so one stone costs one multiply-add per (entry, point). b = 0 (a child no sample
            # reached) is kept positive in the logs only, where it changes nothing above 1e-300.
            g1 = b[:, None] + (1.0 - b)[:, None] * t
            log_g0 = np.log(np.maximum(b, 1e-300))[:, None] + np.log1p(-t)[None, :]
            column = np.zeros((L, K), dtype=np.intp)
            lo = np.full((L, K), -np.inf)
            hi = np.full((L, K), np.inf)
            fidx = np.full((L, K), F, dtype=np.intp)  # F: a spare slot's phi goes nowhere
            D = np.zeros((L, K, q))
            h1 = np.zeros((L, K, q))
            C = np.zeros((L, q))
            column[rows, slot] = feats + F * self._as32[tree[gl]]  # float32 column for sklearn trees
            lo[rows, slot] = leaf_lo[gl, feats]
            hi[rows, slot] = leaf_hi[gl, feats]
            fidx[rows, slot] = feats
            D[rows, slot] = np.log(g1) - log_g0
            # a_i = 1: phi_i = (1 - b_i) int prod_{j != i} g_j = int P * h1_i.
            h1[rows, slot] = (1.0 - b)[:, None] / g1
            np.add.at(C, rows, log_g0)
            inv1mt = 1.0 / (1.0 - t)
            # The per-input sums of the kernel are matrix products: onehot[f, entry] = 1 where
            # entry (leaf, slot) holds input f (a spare slot holds none), and incidence[f, l] = 1
            # where leaf l has input f on its path.
            real = fidx < F
            leaf_of, slot_of = np.nonzero(real)
            onehot = np.zeros((F, L * K))
            onehot[fidx[real], leaf_of * K + slot_of] = 1.0
            incidence = np.zeros((F, L))
            incidence[fidx[real], leaf_of] = 1.0
            groups.append(
                {
                    "column": column,
                    "lo": lo,
                    "hi": hi,
                    "C": C,
                    "DT": np.ascontiguousarray(D.transpose(0, 2, 1)),  # (L, q, K)
                    # h1 + 1/(1 - t): the a_i = 1 weights with the a_i = 0 term added back (see below).
                    "h1w": h1 + inv1mt[None, None, :],
                    "vw": value[leaves, None] * w[None, :],
                    # a_i = 0: phi_i = -b_i int prod_{j != i} g_j = -int P / (1 - t).
                    "inv1mt": inv1mt,
                    "onehot": onehot,  # (F, L * K)
                    "incidence": incidence,  # (F, L)
                }
            )
        # The path tests as comparisons of small integers: per (augmented) input column the
        # sorted thresholds of every path interval, a stone's bin in them (how many lie below its
        # value), and each interval as bin bounds. x > lo and x <= hi hold exactly when
        # bin(x) > index(lo) and bin(x) <= index(hi), so nothing changes but the work's width.
        width = 2 * F
        cuts: list[np.ndarray] = []
        for c in range(width):
            values = [np.concatenate([g["lo"][g["column"] == c], g["hi"][g["column"] == c]]) for g in groups]
            every = np.concatenate(values) if values else np.empty(0)
            cuts.append(np.unique(every[np.isfinite(every)]))
        code = np.int16 if max((u.size for u in cuts), default=0) < np.iinfo(np.int16).max - 1 else np.int32
        for g in groups:
            lo_bin = np.full(g["lo"].shape, -1, dtype=code)
            hi_bin = np.empty(g["hi"].shape, dtype=code)
            for c in np.unique(g["column"]):
                at = g["column"] == c
                lo_c, hi_c = g["lo"][at], g["hi"][at]
                lo_bin[at] = np.where(np.isfinite(lo_c), np.searchsorted(cuts[c], lo_c), -1)
                hi_bin[at] = np.where(np.isfinite(hi_c), np.searchsorted(cuts[c], hi_c), cuts[c].size)
            g["lo_bin"], g["hi_bin"] = lo_bin[..., None], hi_bin[..., None]
        # The compiled kernel's layout (gemcast.treeshap_kernel): every leaf's path inputs as
        # consecutive slots, leaf after leaf.
        p_rows, p_feats = np.nonzero(on_path)
        flat = {
            "start": np.r_[0, np.cumsum(k)].astype(np.int64),
            "column": (p_feats + F * self._as32[tree[p_rows]]).astype(np.int64),
            "lo": np.ascontiguousarray(leaf_lo[p_rows, p_feats]),
            "hi": np.ascontiguousarray(leaf_hi[p_rows, p_feats]),
            "feature": p_feats.astype(np.int64),
            "b": np.ascontiguousarray(leaf_b[p_rows, p_feats]),
            "value": np.ascontiguousarray(value, dtype=np.float64),
            "points": ((k + 1) // 2).astype(np.int64),
            "rules": treeshap_kernel.quadrature(int(q_of_leaf.max(initial=0))),
        }
        flat["ratios"] = treeshap_kernel.ratios(flat["start"], flat["b"], flat["points"], flat["rules"][0])
        compiled = treeshap_kernel.kernel()
        if compiled is not None:
            table_at = treeshap_kernel.table_layout(flat["start"])
            widths = np.diff(flat["start"])
            table = np.zeros(max(1, int((widths << widths)[table_at >= 0].sum())))
            compiled[1](flat["start"], flat["b"], flat["value"], flat["points"], *flat["rules"], *flat["ratios"],
                        table_at, table)
            flat["tables"] = (table_at, table)
            flat["small_tables"] = (np.where(widths <= treeshap_kernel.SMALL_TABLE_K, table_at, -1), table)
        self._leaves = {
            "flat": flat,
            "groups": groups,
            "cuts": cuts,
            "code": code,
            "n_leaves": int(leaf_node.size),
            "base": self._bias + float((value * leaf_b.prod(axis=1)).sum()),
        }
        return self._leaves

    @property
    def base_log(self) -> float:
        """Cover-weighted mean log price: v(empty set) of the path-dependent game."""
        return float(self._leaf_table()["base"])

    def _explain_inputs(self, Z: np.ndarray) -> tuple[float, np.ndarray]:
        """(base_log, phi): exact path-dependent Shapley values over the inputs, n x F."""
        lt = self._leaf_table()
        F = self._F
        n = Z.shape[0]
        compiled = treeshap_kernel.kernel()
        if compiled is not None:
            flat = lt["flat"]
            # Chosen by the whole batch: its blocks of rows (by_row_blocks) read the same tables.
            tables = flat["tables"] if n >= treeshap_kernel.BATCH else flat["small_tables"]

            def explain(rows: np.ndarray) -> np.ndarray:
                out = np.zeros((F, rows.shape[0]))
                compiled[0](np.ascontiguousarray(self._augmented(rows, always=True).T), flat["start"],
                            flat["column"], flat["lo"], flat["hi"], flat["feature"], flat["b"], flat["value"],
                            flat["points"], *flat["rules"], *flat["ratios"], *tables, out)
                return out.T

            return self.base_log, tree_walk.by_row_blocks(explain, Z)
        # Stones last: every work array below is (leaves, slots or points, stones), contiguous.
        ZaT = self._augmented(Z, always=True).T
        bins = np.empty(ZaT.shape, dtype=lt["code"])  # (columns, stones): each value's bin
        for c, cuts in enumerate(lt["cuts"]):
            bins[c] = np.searchsorted(cuts, ZaT[c], side="left")
        phi = np.zeros((n, F))
        # Per stone the largest work arrays hold one value per (leaf, slot).
        cells = max(1, sum(g["lo"].size for g in lt["groups"]))
        block = max(1, _EXPLAIN_BLOCK_CELLS // cells)
        for start in range(0, n, block):
            za = bins[:, start : start + block]
            s = za.shape[1]
            acc = np.zeros((F, s))
            for g in lt["groups"]:
                L, q, K = g["DT"].shape
                xv = za[g["column"]]  # (L, K, s) bins
                on = xv > g["lo_bin"]
                on &= xv <= g["hi_bin"]
                onf = on.astype(np.float64)
                # log P[l, q, s] = C[l, q] + sum_k D[l, k, q] on[l, k, s]: per leaf a small matmul
                # (einsum's loop beats matmul's per-leaf dispatch for one stone, not for many).
                if s == 1:
                    logP = np.einsum("lqk,lk->lq", g["DT"], onf[:, :, 0])[:, :, None]
                else:
                    logP = np.matmul(g["DT"], onf)
                logP += g["C"][:, :, None]
                Mq = np.exp(logP, out=logP)
                Mq *= g["vw"][:, :, None]
                # Entry (l, k) adds with_i where the stone is on the path (a = 1) and -without_l
                # where not: on * (with_i + without_l) - without_l. The first part is a matmul and
                # a product, summed per input by onehot; the second is the same for every slot of
                # a leaf, so per input it is incidence @ without.
                without = np.einsum("q,lqs->ls", g["inv1mt"], Mq)
                if s == 1:
                    both = np.einsum("lkq,lq->lk", g["h1w"], Mq[:, :, 0])[:, :, None]
                else:
                    both = np.matmul(g["h1w"], Mq)  # (L, K, s)
                both *= onf
                acc += g["onehot"] @ both.reshape(L * K, s)
                acc -= g["incidence"] @ without
            phi[start : start + s] = acc.T
        return self.base_log, phi


class _OnnxTrees:
    """The same trees as one onnxruntime TreeEnsemble (ai.onnx.ml opset 5), for batches.

    Built in memory from the packed arrays, never read from a file. Thresholds, leaf weights,
    inputs and output are all float64 (opset 5 keeps the input's type end to end; the older
    TreeEnsembleRegressor always answers in float32, which is not exact), so it computes the
    numpy walk's sums, up to summation order. That is checked, not assumed: at build time
    both predict probe rows (values exactly on, just above and just below the thresholds), and
    any row apart by more than 1e-9 relative discards it. One intra-op thread: serving runs
    one worker per core, and threads of two workers starve each other on 2 cores.
    """

    TOLERANCE = 1e-9

    def __init__(self, session: Any) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name

    def predict(self, Xa: np.ndarray) -> np.ndarray:
        out = self._session.run(None, {self._input: np.ascontiguousarray(Xa, dtype=np.float64)})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)

    @classmethod
    def build(cls, model: TreeEnsembleModel) -> _OnnxTrees | None:
        try:
            import onnxruntime
            from onnx import TensorProto, helper, numpy_helper
        except ImportError:
            _log.info("onnxruntime or onnx is not installed: batches use the numpy walk")
            return None
        try:
            onnx_model = cls._graph(model, helper, numpy_helper, TensorProto)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(
                onnx_model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            fast = cls(session)
            probe = cls._probe(model)
            expected = model._walk(probe)
            got = fast.predict(probe)
        except Exception as exc:  # noqa: BLE001 - any failure of the optional fast path means: do without it
            _log.warning("onnxruntime trees unavailable, batches use the numpy walk: %s", exc)
            return None
        gap = float(np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1.0)))
        if not gap <= cls.TOLERANCE:
            _log.warning("onnxruntime trees differ from the numpy walk by %.3g (relative): not used", gap)
            return None
        return fast

    @staticmethod
    def _graph(model: TreeEnsembleModel, helper: Any, numpy_helper: Any, TensorProto: Any) -> Any:
        T, M, F = model._T, model._M, model._F
        feature, left, right = model._feature, model._left, model._right
        split = feature >= 0
        # Opset 5 numbers interior nodes and leaves separately; a tree that is one leaf gets a
        # stand-in split whose two branches both end in that leaf.
        lone = ~split[:, 0]
        interior = split.copy()
        interior[lone, 0] = True
        node_id = np.full((T, M), -1, dtype=np.int64)
        node_id[interior] = np.arange(int(interior.sum()))
        tt, ii = np.nonzero(split)
        reached = np.zeros((T, M), dtype=bool)
        reached[tt, left[tt, ii]] = True
        reached[tt, right[tt, ii]] = True
        reached &= ~split
        reached[lone, 0] = True
        leaf_id = np.full((T, M), -1, dtype=np.int64)
        leaf_id[reached] = np.arange(int(reached.sum()))
        lt, li = np.nonzero(reached)
        weights = model._value[lt, li] * model._weight[lt]
        # Per interior node, in node_id order (row-major, as np.nonzero gives).
        nt, ni = np.nonzero(interior)
        is_lone = ~split[nt, ni]
        lc = np.where(is_lone, ni, left[nt, ni])
        rc = np.where(is_lone, ni, right[nt, ni])
        l_leaf = is_lone | ~split[nt, lc]
        r_leaf = is_lone | ~split[nt, rc]
        true_ids = np.where(l_leaf, leaf_id[nt, lc], node_id[nt, lc])
        false_ids = np.where(r_leaf, leaf_id[nt, rc], node_id[nt, rc])
        featureids = np.where(is_lone, 0, feature[nt, ni] + F * model._as32[nt])
        splits = np.where(is_lone, 0.0, model._threshold[nt, ni])
        width = 2 * F if model._any32 else F
        trees = helper.make_node(
            "TreeEnsemble",
            ["X"],
            ["S"],
            domain="ai.onnx.ml",
            n_targets=1,
            aggregate_function=1,  # SUM
            post_transform=0,  # NONE
            tree_roots=node_id[:, 0].tolist(),
            nodes_featureids=featureids.tolist(),
            nodes_modes=numpy_helper.from_array(np.zeros(nt.size, dtype=np.uint8)),  # BRANCH_LEQ: x <= t
            nodes_splits=numpy_helper.from_array(splits.astype(np.float64)),
            nodes_truenodeids=true_ids.tolist(),
            nodes_trueleafs=l_leaf.astype(np.int64).tolist(),
            nodes_falsenodeids=false_ids.tolist(),
            nodes_falseleafs=r_leaf.astype(np.int64).tolist(),
            leaf_targetids=[0] * int(weights.size),
            leaf_weights=numpy_helper.from_array(weights.astype(np.float64)),
        )
        add = helper.make_node("Add", ["S", "bias"], ["Y"])
        bias = numpy_helper.from_array(np.array([[model._bias]], dtype=np.float64), name="bias")
        graph = helper.make_graph(
            [trees, add],
            "gemcast_trees",
            [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, width])],
            [helper.make_tensor_value_info("Y", TensorProto.DOUBLE, [None, 1])],
            initializer=[bias],
        )
        return helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)]
        )

    @staticmethod
    def _probe(model: TreeEnsembleModel, n: int = 256) -> np.ndarray:
        """Rows of (augmented) inputs whose every value sits on a threshold or one ulp either side."""
        width = 2 * model._F if model._any32 else model._F
        split = model._feature >= 0
        column = (model._feature + model._F * model._as32[:, None])[split]
        thresholds = model._threshold[split]
        rng = np.random.default_rng(0)
        probe = np.zeros((n, width))
        for c in range(width):
            pool = thresholds[column == c]
            if pool.size == 0:
                continue
            values = rng.choice(pool, n)
            step = rng.integers(-1, 2, n)  # -1: just below, 0: exactly on, 1: just above
            toward = np.where(step > 0, np.inf, -np.inf)
            probe[:, c] = np.where(step == 0, values, np.nextafter(values, toward))
        return probe


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
        if tuple(metadata.get("input_names", FEATURES)) != FEATURES:
            raise ModelFormatError("a linear model's inputs are the 9 raw features")
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

    def _explain_inputs(self, Z: np.ndarray) -> tuple[float, np.ndarray]:
        """(base_log, phi): exact interventional Shapley values per raw feature, n x 9."""
        design = linear_design(Z)
        return self._base, ((design - self._bg) * self._slope) @ self._group
