"""Turn a fitted scikit-learn estimator into the arrays of a gemcast model file.

Training calls :func:`export_model` and writes the result with ``gemcast.model.save_model``;
serving never sees scikit-learn again. scikit-learn is imported inside the functions, so that
importing this module stays cheap.

What can be exported (every one predicting log(price) from the 9 features in
``schema.FEATURES`` order, grades as ordinal codes; a tree model may instead be fitted on
``model.model_inputs(X, names)``, the raw features plus derived inputs such as ``"x/y"``,
and exported with ``input_names=names``):

- tree models: ``HistGradientBoostingRegressor`` (numeric features, identity link),
  ``RandomForestRegressor``, ``ExtraTreesRegressor``, ``GradientBoostingRegressor``,
  ``DecisionTreeRegressor``;
- a weighted average of tree models: a list of estimators with ``weights=``, or a fitted
  ``VotingRegressor`` (weights as ``np.average`` uses them: normalised to sum 1);
- a linear model (``LinearRegression``, ``Ridge``, any single-output ``coef_``/``intercept_``
  regressor) fitted on ``model.linear_design(X)``, alone or in a Pipeline whose optional first
  steps are ``FunctionTransformer(linear_design)`` and ``StandardScaler``;
- any of these inside ``TransformedTargetRegressor(func=np.log, inverse_func=np.exp)``: the
  file then holds the inner regressor, and ``Model.predict`` (exp of the log) equals the
  wrapper's ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gemcast.model import (
    DESIGN_COLUMNS,
    DESIGN_VERSION,
    FORMAT,
    FORMAT_VERSION,
    KIND_LINEAR,
    KIND_TREES,
    META_KEY,
    TARGET,
    ModelFormatError,
    check_input_names,
    linear_design,
    metadata_array,
)
from gemcast.schema import FEATURES


class _Tree:
    """One tree in the packed layout's terms (node arrays of equal length)."""

    __slots__ = ("feature", "threshold", "left", "right", "value", "cover", "as32")

    def __init__(
        self, feature: Any, threshold: Any, left: Any, right: Any, value: Any, cover: Any, as32: bool
    ) -> None:
        self.feature = np.asarray(feature, dtype=np.int32)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self.left = np.asarray(left, dtype=np.int32)
        self.right = np.asarray(right, dtype=np.int32)
        self.value = np.asarray(value, dtype=np.float64)
        self.cover = np.asarray(cover, dtype=np.float64)
        self.as32 = as32


def _json_safe(params: dict[str, Any]) -> dict[str, Any]:
    """The estimator's parameters that JSON can hold as they are (numbers, strings, None)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, np.generic):
            value = value.item()
        finite_float = isinstance(value, float) and bool(np.isfinite(value))
        if value is None or isinstance(value, bool | int | str) or finite_float:
            out[key] = value
    return out


def _describe(est: Any, weight: float, n_trees: int) -> dict[str, Any]:
    return {
        "type": type(est).__name__,
        "weight": float(weight),
        "n_trees": int(n_trees),
        "params": _json_safe(est.get_params(deep=False)),
    }


def _sklearn_tree(tree: Any) -> _Tree:
    """A fitted sklearn ``Tree`` (``estimator.tree_``); it compares float32(x) <= threshold."""
    if tree.n_outputs != 1 or tree.value.shape[1:] != (1, 1):
        raise ModelFormatError("only single-output regression trees can be exported")
    leaf = tree.children_left < 0
    return _Tree(
        feature=np.where(leaf, -1, tree.feature),
        threshold=np.where(leaf, 0.0, tree.threshold),
        left=np.where(leaf, -1, tree.children_left),
        right=np.where(leaf, -1, tree.children_right),
        value=tree.value[:, 0, 0],
        cover=tree.weighted_n_node_samples,
        as32=True,
    )


def _hgb_trees(est: Any) -> tuple[list[_Tree], float]:
    if getattr(est, "n_trees_per_iteration_", 1) != 1:
        raise ModelFormatError("only single-output HistGradientBoostingRegressor can be exported")
    link = type(est._loss.link).__name__
    if link != "IdentityLink":
        raise ModelFormatError(f"HistGradientBoosting loss {est.loss!r} has a {link}; only identity links")
    if est.is_categorical_ is not None and np.any(est.is_categorical_):
        raise ModelFormatError("HistGradientBoosting with native categorical features cannot be exported")
    trees = []
    for (predictor,) in est._predictors:
        nodes = predictor.nodes
        if np.any(nodes["is_categorical"]):
            raise ModelFormatError("HistGradientBoosting categorical splits cannot be exported")
        leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            _Tree(
                feature=np.where(leaf, -1, nodes["feature_idx"]),
                threshold=np.where(leaf, 0.0, nodes["num_threshold"]),
                left=np.where(leaf, -1, nodes["left"].astype(np.int64)),
                right=np.where(leaf, -1, nodes["right"].astype(np.int64)),
                value=nodes["value"],
                cover=nodes["count"],
                as32=False,
            )
        )
    return trees, float(np.asarray(est._baseline_prediction).ravel()[0])


def _tree_component(est: Any) -> tuple[list[_Tree], np.ndarray, float] | None:
    """(trees, per-tree weights, bias) of one tree model, or None if it is not one."""
    from sklearn.ensemble import (
        ExtraTreesRegressor,
        GradientBoostingRegressor,
        HistGradientBoostingRegressor,
        RandomForestRegressor,
    )
    from sklearn.tree import DecisionTreeRegressor, ExtraTreeRegressor

    if isinstance(est, HistGradientBoostingRegressor):
        trees, bias = _hgb_trees(est)
        return trees, np.ones(len(trees)), bias
    if isinstance(est, RandomForestRegressor | ExtraTreesRegressor):
        trees = [_sklearn_tree(e.tree_) for e in est.estimators_]
        # sklearn averages as (sum of trees) / n; weight 1/n differs only in the last bits.
        return trees, np.full(len(trees), 1.0 / len(trees)), 0.0
    if isinstance(est, DecisionTreeRegressor | ExtraTreeRegressor):
        return [_sklearn_tree(est.tree_)], np.ones(1), 0.0
    if isinstance(est, GradientBoostingRegressor):
        init = est.init_
        if isinstance(init, str) and init == "zero":
            bias = 0.0
        elif hasattr(init, "constant_"):
            bias = float(np.asarray(init.constant_).ravel()[0])
        else:
            raise ModelFormatError("GradientBoostingRegressor needs init=None, 'zero' or a DummyRegressor")
        trees = [_sklearn_tree(e.tree_) for e in est.estimators_[:, 0]]
        return trees, np.full(len(trees), float(est.learning_rate)), bias
    return None


def _unwrap_log_target(est: Any) -> Any:
    from sklearn.compose import TransformedTargetRegressor

    if isinstance(est, TransformedTargetRegressor):
        if est.func is not np.log or est.inverse_func is not np.exp or est.transformer is not None:
            raise ModelFormatError("TransformedTargetRegressor must use func=np.log, inverse_func=np.exp")
        return est.regressor_
    return est


def _components(estimator: Any, weights: Sequence[float] | None) -> list[tuple[Any, float]]:
    """Flatten lists and VotingRegressors into (estimator, normalised weight) pairs."""
    from sklearn.ensemble import VotingRegressor

    if not isinstance(estimator, list | tuple):
        estimator = _unwrap_log_target(estimator)
    if isinstance(estimator, VotingRegressor):
        if weights is not None:
            raise ModelFormatError("give weights on the VotingRegressor, not to export_model")
        members = list(estimator.estimators_)
        w = estimator._weights_not_none
        weights = [1.0] * len(members) if w is None else [float(x) for x in w]
    elif isinstance(estimator, list | tuple):
        members = list(estimator)
        weights = [1.0] * len(members) if weights is None else [float(x) for x in weights]
    else:
        if weights is not None:
            raise ModelFormatError("weights are for a list of estimators")
        return [(estimator, 1.0)]
    if not members or len(weights) != len(members):
        raise ModelFormatError(f"{len(members)} estimators but {len(weights)} weights")
    total = float(np.sum(weights))
    if not np.isfinite(total) or total <= 0 or min(weights) < 0:
        raise ModelFormatError("weights must be >= 0 with a positive sum")
    out: list[tuple[Any, float]] = []
    for member, w in zip(members, weights, strict=True):
        for inner, w_inner in _components(member, None):
            out.append((inner, w * w_inner / total))
    return out


def _check_feature_names(
    feature_names: Sequence[str], input_names: tuple[str, ...], estimators: Sequence[Any]
) -> None:
    if tuple(feature_names) != FEATURES:
        raise ModelFormatError(f"feature_names must be {list(FEATURES)}, got {list(feature_names)}")
    for est in estimators:
        names = getattr(est, "feature_names_in_", None)
        if names is not None and tuple(names) not in (input_names, FEATURES, DESIGN_COLUMNS):
            raise ModelFormatError(f"{type(est).__name__} was fitted on columns {list(names)}")


def _check_tree_inputs(est: Any, input_names: tuple[str, ...]) -> None:
    """A tree model must have been fitted on exactly the columns input_names promises."""
    n_in = getattr(est, "n_features_in_", None)
    if n_in is not None and n_in != len(input_names):
        raise ModelFormatError(
            f"{type(est).__name__} was fitted on {n_in} columns but input_names lists {len(input_names)}: "
            "fit it on model_inputs(X, input_names)"
        )
    names = getattr(est, "feature_names_in_", None)
    if names is not None and tuple(names) != input_names:
        raise ModelFormatError(
            f"{type(est).__name__} was fitted on columns {list(names)}, not {list(input_names)}"
        )


def _base_meta(kind: str, components: list[dict[str, Any]], n_trees: int) -> dict[str, Any]:
    import sklearn

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "feature_names": list(FEATURES),
        "target": TARGET,
        "n_trees": n_trees,
        "components": components,
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
    }


def _pack_trees(
    parts: list[tuple[Any, float, list[_Tree], np.ndarray, float]], input_names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    trees = [t for _, _, ts, _, _ in parts for t in ts]
    weights = np.concatenate([w * tw for _, w, _, tw, _ in parts])
    bias = float(sum(w * b for _, w, _, _, b in parts))
    T, M = len(trees), max(len(t.feature) for t in trees)
    feature = np.full((T, M), -1, dtype=np.int32)
    left = np.full((T, M), -1, dtype=np.int32)
    right = np.full((T, M), -1, dtype=np.int32)
    threshold = np.zeros((T, M))
    value = np.zeros((T, M))
    cover = np.zeros((T, M))
    for i, t in enumerate(trees):
        n = len(t.feature)
        feature[i, :n], left[i, :n], right[i, :n] = t.feature, t.left, t.right
        threshold[i, :n], value[i, :n], cover[i, :n] = t.threshold, t.value, t.cover
    components = [_describe(est, w, len(ts)) for est, w, ts, _, _ in parts]
    meta = _base_meta(KIND_TREES, components, T)
    meta["max_nodes"] = M
    meta["input_names"] = list(input_names)
    return {
        META_KEY: metadata_array(meta),
        "tree_feature": feature,
        "tree_threshold": threshold,
        "tree_left": left,
        "tree_right": right,
        "tree_value": value,
        "tree_cover": cover,
        "tree_weight": weights,
        "tree_float32": np.array([t.as32 for t in trees], dtype=bool),
        "bias": np.array(bias),
    }


def _export_linear(est: Any, background: np.ndarray | None) -> dict[str, np.ndarray]:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    steps = (
        [s for _, s in est.steps if s not in (None, "passthrough")] if isinstance(est, Pipeline) else [est]
    )
    D = len(DESIGN_COLUMNS)
    on_raw = False
    if steps and isinstance(steps[0], FunctionTransformer):
        if steps[0].func is not linear_design:
            raise ModelFormatError("a FunctionTransformer in a linear Pipeline must be linear_design")
        on_raw = True
        steps = steps[1:]
    center, scale = np.zeros(D), np.ones(D)
    background_mean = None
    if steps and isinstance(steps[0], StandardScaler):
        scaler = steps[0]
        if scaler.with_mean:
            center = np.asarray(scaler.mean_, dtype=np.float64)
            background_mean = center.copy()
        if scaler.with_std:
            scale = np.asarray(scaler.scale_, dtype=np.float64)
        steps = steps[1:]
    if len(steps) != 1:
        raise ModelFormatError("a linear Pipeline may hold linear_design, StandardScaler, then one regressor")
    reg = steps[0]
    coef = np.asarray(reg.coef_, dtype=np.float64)
    if coef.shape != (D,):
        raise ModelFormatError(
            f"the linear model has {coef.size} coefficients; fit it on linear_design(X) ({D} columns)"
        )
    n_in = getattr(est, "n_features_in_", None)
    if n_in is not None and n_in != (len(FEATURES) if on_raw else D):
        raise ModelFormatError(f"the linear model was fitted on {n_in} columns")
    if background is not None:
        background_mean = linear_design(np.asarray(background, dtype=np.float64)).mean(axis=0)
    if background_mean is None:
        raise ModelFormatError(
            "a linear model's explanation needs the training data's mean: pass background=X_train "
            "or put a StandardScaler in the Pipeline"
        )
    meta = _base_meta(KIND_LINEAR, [_describe(reg, 1.0, 0)], 0)
    meta["design"] = DESIGN_VERSION
    meta["design_columns"] = list(DESIGN_COLUMNS)
    meta["input"] = "raw features" if on_raw else "linear_design(X)"
    return {
        META_KEY: metadata_array(meta),
        "coef": coef,
        "intercept": np.array(float(np.ravel(reg.intercept_)[0])),
        "center": center,
        "scale": scale,
        "background_mean": np.asarray(background_mean, dtype=np.float64),
    }


def export_model(
    estimator: Any,
    feature_names: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    background: np.ndarray | None = None,
    input_names: Sequence[str] = FEATURES,
) -> dict[str, np.ndarray]:
    """Arrays for ``gemcast.model.save_model`` (or ``np.savez``) from a fitted estimator.

    ``estimator``: one fitted estimator, a list of them (averaged with ``weights``, equal by
    default), or a ``VotingRegressor``; see the module docstring for the types. Every one must
    predict log(price). ``feature_names`` must be ``schema.FEATURES``: a check that the columns
    the estimator was fitted on are the ones the model file promises. ``background``: the raw
    training features (n x 9), needed to explain a linear model without a StandardScaler.
    ``input_names``: the columns a tree model was fitted on, ``model.model_inputs(X,
    input_names)`` (for example ``model.DEFAULT_INPUTS``); a linear model takes the raw
    features only. Raises ``ModelFormatError`` for anything that cannot be packed exactly.
    """
    inputs = check_input_names(input_names)
    parts = _components(estimator, weights)
    _check_feature_names(feature_names, inputs, [est for est, _ in parts])
    tree_parts = []
    linear = []
    for est, w in parts:
        comp = _tree_component(est)
        if comp is None:
            linear.append((est, w))
        else:
            tree_parts.append((est, w, *comp))
    if linear and tree_parts:
        raise ModelFormatError("a model file holds trees or one linear model, not both")
    if linear:
        if len(linear) != 1:
            raise ModelFormatError("a model file holds one linear model (average their coefficients first)")
        est, w = linear[0]
        if w != 1.0:
            raise ModelFormatError("a linear model is exported on its own")
        if not (hasattr(est, "coef_") or hasattr(est, "steps")):
            raise ModelFormatError(f"cannot export a {type(est).__name__}")
        if inputs != FEATURES:
            raise ModelFormatError(
                "a linear model takes the 9 raw features: export it with input_names FEATURES"
            )
        return _export_linear(est, background)
    for est, *_ in tree_parts:
        _check_tree_inputs(est, inputs)
    return _pack_trees(tree_parts, inputs)
