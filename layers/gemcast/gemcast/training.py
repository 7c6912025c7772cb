"""Training: split, search, fit and score a price model. The one module that needs scikit-learn.

Price is learned on a log scale (errors of a few percent matter alike for a $400 and a
$15,000 stone). Two kinds of model:

- ``linear``: a ridge regression on log price, the baseline;
- ``gbm``: gradient-boosted trees (scikit-learn's HistGradientBoostingRegressor) with the
  absolute error of log(price) as loss (its optimum is the median price, what MAE in dollars
  asks for), boosted from a *price-per-carat line* (below), on the nine features plus derived
  inputs (``GBM_INPUTS``: x / y, how round the
  stone is; carats per mm^3 of x*y*z, weight hidden in the stone; the measured volume and mean
  diameter; spread; the gap between stated and measured depth: inputs the trees cannot build
  from the raw columns themselves), tuned by a seeded, time-budgeted random search scored on a
  validation split of the training rows, then fitted ``blend`` times with different seeds and
  averaged (one tree ensemble; ``max_trees`` bounds the whole, for the explanation's speed).

The price-per-carat line. Price grows like a power of weight (log price is close to linear in
log carat), and boosting from a constant spends its first hundreds of trees learning that curve.
So the boosted trees learn ``log(price) - (a log(carat) + b)``, the log of price per carat^a,
with a and b a least-squares line on the training rows (``carat_line``). The line is carried
by one more tree, a decision tree on carat alone (``carat_tree``: a leaf per carat the
training rows hold, the line's value there), so the model is still a sum of trees: predict_log
is the line's tree plus the boosted trees, in one file, and its Shapley values are exact, the
line's going to carat (the stone's size). The boosted trees learn the residual of the tree
itself, not of the smooth line, so what they are fitted to and what is exported agree exactly.
Parts are stored as a weighted average (``gemcast.export``): with k boosted members, each of
the k + 1 parts has weight 1 / (k + 1) and is fitted to (k + 1) times its share (the line's
tree to (k + 1) times the line, a member to (k + 1) / k times the residual); boosting with
the absolute error (or squared error) is equivariant to that scale, so this is the same model.

Every kind is fitted without the *calibration slice* (``CALIBRATION_PERCENT`` of the training
rows, by hash): the exported model's errors on those rows calibrate its price ranges
(``gemcast.intervals``), stored in the model file.

Everything is seeded. The search evaluates a fixed, seeded list of candidates in order and
stops early only when the time budget runs out; the manifest records how many it scored, so
a run is reproduced by the same data, seed and trial count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gemcast.model import DEFAULT_INPUTS, model_inputs
from gemcast.schema import FEATURES, HOLDOUT_PERCENT, is_holdout, stone_id

logger = logging.getLogger(__name__)

VALIDATION_PERCENT = 15  # of the training rows, for the search only
# Of the training rows, kept out of every fit: the price ranges are calibrated on them
# (gemcast.intervals), so a range's stated share holds for stones the model never saw.
CALIBRATION_PERCENT = 10
MIN_CALIBRATION_ROWS = 40

MODEL_KINDS = ("gbm", "linear")
# The derived inputs a gemologist reads beside the grades (gemcast.model.DERIVED_INPUTS): each
# belongs to one reason group (size or proportions), so the grouped reasons stay exact.
GBM_INPUTS = DEFAULT_INPUTS + ("xyz", "(x+y)/2", "spread", "depth_gap")


@dataclass(frozen=True)
class TrainConfig:
    kind: str = "gbm"
    seed: int = 0
    budget_s: float = 60.0
    max_trials: int = 6
    max_iter: int = 1500
    # Boosted models averaged (seeds apart); one file, one tree ensemble. Seeds differ only where
    # a split samples its columns (max_features < 1): the default samples none, so one member.
    blend: int = 1
    # Trees of the whole blend at most: the explanation's cost grows with them (one stone with
    # its reasons must stay fast), so members share this budget. A search trial grows no more
    # trees than a member may keep.
    max_trees: int = 600
    carat_line: bool = True  # boost from the price-per-carat line (module docstring)


@dataclass
class TrainedModel:
    kind: str
    estimators: list[tuple[Any, float]]  # (fitted scikit-learn estimator, weight)
    params: dict[str, Any]
    search: list[dict[str, Any]] = field(default_factory=list)
    fit_seconds: float = 0.0
    background: np.ndarray | None = None  # the raw training X, for a linear model's explanation
    input_names: tuple[str, ...] = FEATURES  # what the estimator was fitted on (model.model_inputs)
    # The calibration rows (raw X, prices), kept out of the fit, for the price ranges.
    calibration: tuple[np.ndarray, np.ndarray] | None = None
    typical: dict[str, Any] = field(default_factory=dict)  # the training data's typical stone


def split_indices(stones: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, held-out indices), by each stone's feature hash."""
    holdout = np.fromiter((is_holdout(s) for s in stones), dtype=bool, count=len(stones))
    return np.flatnonzero(~holdout), np.flatnonzero(holdout)


def _validation_mask(stones: Sequence[dict[str, Any]]) -> np.ndarray:
    # A second, independent hash slice of the training rows, so the search never sees the
    # held-out rows and its validation rows are stable across data versions too.
    return np.fromiter(
        (int(stone_id(s)[8:16], 16) % 100 < VALIDATION_PERCENT for s in stones), dtype=bool, count=len(stones)
    )


def calibration_mask(stones: Sequence[dict[str, Any]]) -> np.ndarray:
    """The calibration slice of the training rows: a third hash slice, independent of the other two."""
    return np.fromiter(
        ((int(stone_id(s)[8:16], 16) // 100) % 100 < CALIBRATION_PERCENT for s in stones),
        dtype=bool, count=len(stones),
    )


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, MAPE (%), RMSE in dollars and R2, rounded for reading."""
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    err = y_pred - y_true
    ss_res = float(np.sum(err**2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2)) or 1.0
    return {
        "mae": round(float(np.mean(np.abs(err))), 4),
        "mape": round(float(np.mean(np.abs(err) / y_true) * 100.0), 4),
        "rmse": round(float(np.sqrt(np.mean(err**2))), 4),
        "r2": round(1.0 - ss_res / ss_tot, 6),
        "n": int(len(y_true)),
    }


def _search_space(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """A seeded list of candidates; the first is a strong default so one trial is already good."""
    # The default was chosen on the validation rows of diamonds_large.csv (never the held-out
    # ones; validation MAPE at 600 trees): every column at every split (max_features 1.0) beat
    # half of them (5.72 against 5.77 %), a learning rate of 0.1 beat 0.15 and 0.2, 20 samples
    # a leaf beat 40 ($256 against $259 MAE), depth 12 beat 6 (5.68 against 5.82 %), and 31
    # leaves is the most a tree may have for one stone's reasons to stay fast (63-leaf trees
    # scored 5.66 % but cost five times more to explain).
    candidates: list[dict[str, Any]] = [
        {"learning_rate": 0.1, "max_leaf_nodes": 31, "max_depth": 12, "min_samples_leaf": 20,
         "l2_regularization": 1.0, "max_features": 1.0},
    ]
    seen = {json_key(candidates[0])}
    while len(candidates) < n and len(seen) < 200:
        candidate = {
            "learning_rate": float(rng.choice([0.08, 0.1, 0.12])),
            "max_leaf_nodes": int(rng.choice([23, 27, 31])),
            "max_depth": int(rng.choice([8, 10, 12])),
            "min_samples_leaf": int(rng.choice([15, 25, 40])),
            "l2_regularization": float(rng.choice([0.0, 1.0])),
            "max_features": float(rng.choice([0.7, 1.0])),
        }
        if json_key(candidate) not in seen:
            seen.add(json_key(candidate))
            candidates.append(candidate)
    return candidates


def json_key(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={params[k]}" for k in sorted(params))


def carat_line(X: np.ndarray, log_y: np.ndarray) -> tuple[float, float]:
    """(a, b) of the least-squares line log(price) = a log(carat) + b on model inputs X."""
    log_carat = np.log(X[:, GBM_INPUTS.index("carat")])
    a, b = np.polyfit(log_carat, log_y, 1)
    return float(a), float(b)


def carat_tree(X: np.ndarray, line: tuple[float, float], scale: float = 1.0) -> Any:
    """A decision tree on carat alone whose leaves hold ``scale * (a log(carat) + b)``.

    Fitted on model inputs X (every column but carat zeroed, so it splits on carat only and
    predicts on the full inputs): a leaf per distinct training carat, holding the line's value
    there exactly; a carat between two seen ones takes the nearer one's (thresholds sit halfway).
    """
    from sklearn.tree import DecisionTreeRegressor

    col = GBM_INPUTS.index("carat")
    only = np.zeros_like(X)
    only[:, col] = X[:, col]
    a, b = line
    return DecisionTreeRegressor(random_state=0).fit(only, scale * (a * np.log(X[:, col]) + b))


def _gbm(params: dict[str, Any], max_iter: int, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(loss="absolute_error", max_iter=max_iter, early_stopping=False,
                                         random_state=seed, **params)


def fit_gbm(
    X: np.ndarray,
    log_y: np.ndarray,
    stones: Sequence[dict[str, Any]],
    config: TrainConfig,
    progress: Callable[[str], None] = lambda _msg: None,
) -> TrainedModel:
    """Seeded, time-budgeted random search, then one fit on every training row."""
    started = time.perf_counter()
    X = model_inputs(X, GBM_INPUTS)
    val = _validation_mask(stones)
    blend = max(1, config.blend)
    # The line (and its tree) from the rows a fit sees: the search's from the search rows only.
    offset = np.zeros_like(log_y)
    line: tuple[float, float] | None = None
    if config.carat_line:
        line = carat_line(X[~val], log_y[~val])
        offset = carat_tree(X[~val], line).predict(X)
    residual = log_y - offset
    # A trial grows no more trees than a member may keep; its best count is read off the
    # staged predictions on the validation rows.
    trial_iter = max(50, min(config.max_iter, config.max_trees // blend))
    rng = np.random.default_rng(config.seed)
    candidates = _search_space(rng, config.max_trials)
    search: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for trial, params in enumerate(candidates, start=1):
        elapsed = time.perf_counter() - started
        if search and elapsed > config.budget_s:
            progress(f"search: time budget {config.budget_s:.0f}s reached after {len(search)} trials")
            break
        t0 = time.perf_counter()
        model = _gbm(params, trial_iter, config.seed).fit(X[~val], residual[~val])
        y_val = np.exp(log_y[val])
        best_iter, best_mae = 0, np.inf
        for i, staged in enumerate(model.staged_predict(X[val]), start=1):
            if i % 25 and i != model.n_iter_:
                continue
            mae = float(np.mean(np.abs(np.exp(staged + offset[val]) - y_val)))
            if mae < best_mae:
                best_iter, best_mae = i, mae
        row = {"trial": trial, "params": params, "n_iter": best_iter, "val_mae": round(best_mae, 4),
               "seconds": round(time.perf_counter() - t0, 2)}
        search.append(row)
        progress(f"search: trial {trial}/{len(candidates)} val MAE {best_mae:.2f} with {best_iter} trees, {params}")
        if best is None or best_mae < best["val_mae"]:
            best = row
    assert best is not None
    # More rows than in the search, so a few more trees.
    n_iter = max(50, min(int(round(best["n_iter"] * 1.1)), config.max_trees // blend))
    t0 = time.perf_counter()
    # A blend of boosted models that differ by their seed (each samples its own columns per
    # split, when max_features < 1): averaging them cuts the variance of one. Their trees
    # concatenated, each weighted 1/k, are one tree ensemble again, explained exactly like a
    # single model; the price-per-carat line's tree joins them as one more part (module
    # docstring: each of the k + 1 parts fitted to (k + 1) times its share).
    members: list[tuple[Any, float]] = []
    parts = blend + (1 if line is not None else 0)
    residual = log_y
    if line is not None:
        line = carat_line(X, log_y)
        tree = carat_tree(X, line, scale=float(parts))
        members.append((tree, 1.0 / parts))
        residual = log_y - tree.predict(X) / parts
    for k in range(blend):
        target = residual * (parts / blend)
        members.append((_gbm(best["params"], n_iter, config.seed + k).fit(X, target), 1.0 / parts))
        progress(f"fit: blend member {k + 1}/{blend} with {n_iter} trees")
    fit_s = time.perf_counter() - t0
    params = {**best["params"], "max_iter": n_iter, "loss": "absolute_error", "target": "log(price)",
              "inputs": list(GBM_INPUTS), "blend": blend}
    if line is not None:
        params["carat_line"] = {"a": round(line[0], 6), "b": round(line[1], 6),
                                "leaves": int(members[0][0].get_n_leaves())}
    return TrainedModel("gbm", members, params, search, fit_s, input_names=GBM_INPUTS)


def fit_linear(X: np.ndarray, log_y: np.ndarray, config: TrainConfig) -> TrainedModel:
    from sklearn.linear_model import Ridge

    from gemcast.model import linear_design

    t0 = time.perf_counter()
    model = Ridge(alpha=1.0).fit(linear_design(X), log_y)
    trained = TrainedModel("linear", [(model, 1.0)], {"alpha": 1.0, "target": "log(price)"}, [],
                           time.perf_counter() - t0)
    trained.background = X
    return trained


def fit(
    X: np.ndarray,
    prices: np.ndarray,
    stones: Sequence[dict[str, Any]],
    config: TrainConfig,
    progress: Callable[[str], None] = lambda _msg: None,
) -> TrainedModel:
    """Fit on the training rows but the calibration slice, which calibrates the price ranges."""
    from gemcast.reasons import typical_stone

    if config.kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {config.kind!r}: use one of {', '.join(MODEL_KINDS)}")
    log_y = np.log(prices)
    cal = calibration_mask(stones)
    if cal.sum() < MIN_CALIBRATION_ROWS:
        cal[:] = False  # too few stones to calibrate a range: the model then answers prices without one
    keep = np.flatnonzero(~cal)
    if config.kind == "linear":
        trained = fit_linear(X[keep], log_y[keep], config)
    else:
        trained = fit_gbm(X[keep], log_y[keep], [stones[int(i)] for i in keep], config, progress)
    if cal.any():
        trained.calibration = (X[cal], prices[cal])
    trained.typical = typical_stone(X)
    return trained


def export(trained: TrainedModel) -> bytes:
    """The trained model as a numpy-only model file (see gemcast.model)."""
    from gemcast import intervals
    from gemcast.export import export_model
    from gemcast.model import load_model, save_model

    if len(trained.estimators) == 1 and trained.estimators[0][1] == 1.0:
        arrays = export_model(trained.estimators[0][0], FEATURES, background=trained.background,
                              input_names=trained.input_names)
    else:
        arrays = export_model([e for e, _ in trained.estimators], FEATURES, input_names=trained.input_names,
                              weights=[w for _, w in trained.estimators], background=trained.background)
    extra: dict[str, Any] = {"typical_stone": trained.typical} if trained.typical else {}
    if trained.calibration is not None:
        # Calibrated with the exported file's own predictions: the ranges belong to what is served.
        X_cal, y_cal = trained.calibration
        log_pred = load_model(save_model(arrays)).predict_log(X_cal)
        extra["intervals"] = intervals.calibrate(log_pred, np.log(y_cal))
    return save_model(arrays, extra)


__all__ = ["HOLDOUT_PERCENT", "TrainConfig", "TrainedModel", "fit", "export", "metrics", "split_indices"]


def conformalised_quantiles(
    X_fit: np.ndarray, prices_fit: np.ndarray, X_cal: np.ndarray, prices_cal: np.ndarray, X_test: np.ndarray,
    coverages: Sequence[int] = (50, 80, 95), *, max_iter: int = 300, seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CQR (Romano et al. 2019), measured beside the shipped split-conformal ranges.

    Per coverage c: quantile boosted models of log price at (1 - c) / 2 and (1 + c) / 2 on the
    fit rows, conformalised on the calibration rows (score max(lo - y, y - hi), its
    split-conformal quantile q widens both ends by q). Returns per coverage the (low, high)
    prices of the X_test stones.
    """
    from sklearn.ensemble import HistGradientBoostingRegressor

    from gemcast.intervals import conformal_quantile

    Z_fit, Z_cal, Z_test = (model_inputs(X, GBM_INPUTS) for X in (X_fit, X_cal, X_test))
    y_fit, y_cal = np.log(prices_fit), np.log(prices_cal)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for c in coverages:
        ends = []
        for q in ((1 - c / 100) / 2, (1 + c / 100) / 2):
            est = HistGradientBoostingRegressor(loss="quantile", quantile=q, max_iter=max_iter, learning_rate=0.1,
                                                max_leaf_nodes=31, min_samples_leaf=40, random_state=seed)
            est.fit(Z_fit, y_fit)
            ends.append((est.predict(Z_cal), est.predict(Z_test)))
        (lo_cal, lo_test), (hi_cal, hi_test) = ends
        widen = conformal_quantile(np.maximum(lo_cal - y_cal, y_cal - hi_cal), c / 100)
        out[str(c)] = (np.exp(lo_test - widen), np.exp(hi_test + widen))
    return out
