"""Exporting scikit-learn estimators: the numpy model predicts exactly what sklearn predicts."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.compose import TransformedTargetRegressor  # noqa: E402
from sklearn.ensemble import (  # noqa: E402
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
    VotingRegressor,
)
from sklearn.linear_model import LinearRegression, Ridge  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402
from sklearn.tree import DecisionTreeRegressor  # noqa: E402

import gemcast.model  # noqa: E402
from gemcast.errors import ValidationError  # noqa: E402
from gemcast.export import export_model  # noqa: E402
from gemcast.model import (  # noqa: E402
    DEFAULT_INPUTS,
    DESIGN_COLUMNS,
    ModelFormatError,
    linear_design,
    load_model,
    model_inputs,
    save_model,
)
from gemcast.schema import CATEGORIES, FEATURES  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "data" / "diamonds.csv"
RTOL = 1e-9


@pytest.fixture(autouse=True, scope="module")
def one_openmp_thread():  # type: ignore[no-untyped-def]
    # Other processes share these 2 cores; HGB's OpenMP threads then starve each other.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.uniform(0.2, 3.0, n),
            rng.integers(0, 5, n),
            rng.integers(0, 7, n),
            rng.integers(0, 8, n),
            rng.normal(61.5, 1.5, n),
            rng.normal(57.0, 2.0, n),
            rng.uniform(3.8, 9.5, n),
            rng.uniform(3.8, 9.5, n),
            rng.uniform(2.3, 5.9, n),
        ]
    ).astype(np.float64)
    log_price = (
        8.0
        + 1.8 * np.log(X[:, 0])
        + 0.04 * X[:, 1]
        + 0.06 * X[:, 2]
        + 0.09 * X[:, 3]
        + 0.02 * (X[:, 4] - 61.5) * X[:, 0]
    )
    return X, log_price + rng.normal(0.0, 0.08, n)


def diamonds() -> tuple[np.ndarray, np.ndarray]:
    """The bundled sample after the cleaning rule price > 0 and every dimension > 0."""
    with DATA.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    X = np.array(
        [[CATEGORIES[f].index(r[f]) if f in CATEGORIES else float(r[f]) for f in FEATURES] for r in rows]
    )
    price = np.array([float(r["price"]) for r in rows])
    keep = (price > 0) & (X[:, 6:9] > 0).all(axis=1)
    return X[keep], np.log(price[keep])


def roundtrip(estimator, **kwargs):  # type: ignore[no-untyped-def]
    return load_model(save_model(export_model(estimator, FEATURES, **kwargs)))


def assert_close(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=0)


@pytest.fixture(scope="module")
def train() -> tuple[np.ndarray, np.ndarray]:
    return synthetic(1500, seed=1)


@pytest.fixture(scope="module")
def test_X() -> np.ndarray:
    return synthetic(400, seed=2)[0]


@pytest.mark.parametrize(
    "estimator",
    [
        HistGradientBoostingRegressor(max_iter=40, max_leaf_nodes=15, random_state=0),
        RandomForestRegressor(n_estimators=12, max_depth=7, random_state=0),
        ExtraTreesRegressor(n_estimators=12, min_samples_leaf=3, random_state=0),
        GradientBoostingRegressor(n_estimators=25, max_depth=3, random_state=0),
        DecisionTreeRegressor(max_depth=6, random_state=0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_tree_models_predict_what_sklearn_predicts(estimator, train, test_X) -> None:  # type: ignore[no-untyped-def]
    estimator.fit(*train)
    model = roundtrip(estimator)
    assert_close(model.predict_log(test_X), estimator.predict(test_X))
    assert_close(model.predict_log(train[0][:300]), estimator.predict(train[0][:300]))
    assert model.metadata["components"][0]["type"] == type(estimator).__name__


def test_weighted_average_of_ensembles_is_one_model(train, test_X) -> None:  # type: ignore[no-untyped-def]
    members = [
        HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(*train),
        HistGradientBoostingRegressor(max_iter=20, learning_rate=0.2, random_state=1).fit(*train),
        RandomForestRegressor(n_estimators=8, max_depth=6, random_state=0).fit(*train),
    ]
    weights = [0.5, 0.3, 0.2]
    model = roundtrip(members, weights=weights)
    expected = sum(w * m.predict(test_X) for w, m in zip(weights, members, strict=True))
    assert_close(model.predict_log(test_X), expected)
    assert model.n_trees == 30 + 20 + 8
    assert [c["weight"] for c in model.metadata["components"]] == pytest.approx(weights)


def test_voting_regressor_and_log_target_wrapper(train, test_X) -> None:  # type: ignore[no-untyped-def]
    voting = VotingRegressor(
        [
            ("hgb", HistGradientBoostingRegressor(max_iter=20, random_state=0)),
            ("et", ExtraTreesRegressor(n_estimators=6, max_depth=6, random_state=0)),
        ],
        weights=[3, 1],
    )
    X, log_y = train
    wrapped = TransformedTargetRegressor(regressor=voting, func=np.log, inverse_func=np.exp).fit(
        X, np.exp(log_y)
    )
    model = roundtrip(wrapped)
    assert_close(model.predict(test_X), wrapped.predict(test_X))


def test_float32_threshold_semantics_of_sklearn_trees() -> None:
    # sklearn's trees compare float32(x) <= threshold: 1.5 + 1e-9 goes left there, right in float64.
    X = np.tile(synthetic(4, seed=3)[0][:1], (40, 1))
    X[:20, 0], X[20:, 0] = 1.0, 2.0
    y = np.where(X[:, 0] < 1.5, 7.0, 9.0)
    tree = DecisionTreeRegressor(max_depth=1).fit(X, y)
    assert tree.tree_.threshold[0] == 1.5
    probe = X[:2].copy()
    probe[:, 0] = [1.5 + 1e-9, 1.5 + 1e-6]
    model = roundtrip(tree)
    np.testing.assert_array_equal(model.predict_log(probe), tree.predict(probe))
    np.testing.assert_array_equal(tree.predict(probe), [7.0, 9.0])


def test_real_fit_on_the_diamonds_sample() -> None:
    X, y = diamonds()
    assert len(X) == 4989
    hgb = HistGradientBoostingRegressor(max_iter=80, random_state=0).fit(X, y)
    rf = RandomForestRegressor(n_estimators=10, min_samples_leaf=5, random_state=0).fit(X, y)
    for est in (hgb, rf):
        assert_close(roundtrip(est).predict_log(X), est.predict(X))
    both = roundtrip([hgb, rf], weights=[2, 1])
    assert_close(both.predict(X), np.exp((2 * hgb.predict(X) + rf.predict(X)) / 3))


def test_linear_pipeline_on_raw_features(train, test_X) -> None:  # type: ignore[no-untyped-def]
    pipe = make_pipeline(FunctionTransformer(linear_design), StandardScaler(), Ridge(alpha=1.0)).fit(*train)
    model = roundtrip(pipe)
    assert model.kind == "linear"
    assert_close(model.predict_log(test_X), pipe.predict(test_X))
    assert model.metadata["design_columns"] == list(DESIGN_COLUMNS)


def test_linear_model_on_design_matrix_needs_background(train, test_X) -> None:  # type: ignore[no-untyped-def]
    X, y = train
    lr = LinearRegression().fit(linear_design(X), y)
    with pytest.raises(ModelFormatError, match="background"):
        export_model(lr, FEATURES)
    model = roundtrip(lr, background=X)
    assert_close(model.predict_log(test_X), lr.predict(linear_design(test_X)))
    # Explained from the training mean: a stone at the mean design gets the base price.
    assert model.base_log == pytest.approx(float(lr.predict(linear_design(X).mean(axis=0, keepdims=True))[0]))


def test_refuses_what_it_cannot_pack_exactly(train) -> None:  # type: ignore[no-untyped-def]
    X, y = train
    with pytest.raises(ModelFormatError, match="feature_names"):
        export_model(DecisionTreeRegressor(max_depth=2).fit(X, y), list(reversed(FEATURES)))
    with pytest.raises(ModelFormatError, match="identity"):
        export_model(HistGradientBoostingRegressor(loss="poisson", max_iter=5).fit(X, np.exp(y)), FEATURES)
    with pytest.raises(ModelFormatError, match="coefficients"):
        export_model(LinearRegression().fit(X, y), FEATURES, background=X)
    with pytest.raises(ModelFormatError, match="not both"):
        export_model(
            [DecisionTreeRegressor(max_depth=2).fit(X, y), LinearRegression().fit(linear_design(X), y)],
            FEATURES,
            background=X,
        )


def test_prediction_refuses_bad_rows(train) -> None:  # type: ignore[no-untyped-def]
    model = roundtrip(DecisionTreeRegressor(max_depth=3).fit(*train))
    row = train[0][:1].copy()
    for column, bad in ((0, np.nan), (1, 5.0), (2, 2.5), (3, -1.0)):
        broken = row.copy()
        broken[0, column] = bad
        with pytest.raises(ValidationError):
            model.predict_log(broken)
    with pytest.raises(ValidationError):
        model.predict_log(np.zeros((2, 8)))


@pytest.mark.parametrize(
    "estimator",
    [
        HistGradientBoostingRegressor(max_iter=40, max_leaf_nodes=15, max_features=0.3, random_state=0),
        RandomForestRegressor(n_estimators=8, max_depth=7, random_state=0),
    ],
    ids=lambda e: type(e).__name__,
)
def test_tree_model_on_derived_inputs_predicts_what_sklearn_predicts(
    estimator, train, test_X
) -> None:  # type: ignore[no-untyped-def]
    X, y = train
    estimator.fit(model_inputs(X, DEFAULT_INPUTS), y)
    model = load_model(save_model(export_model(estimator, FEATURES, input_names=DEFAULT_INPUTS)))
    assert model.metadata["input_names"] == list(DEFAULT_INPUTS)
    expected = estimator.predict(model_inputs(test_X, DEFAULT_INPUTS))
    # Callers pass the raw 9 features; the model computes x/y itself. Every walk the model may
    # take must match: onnxruntime (batches, when installed), the compiled one, numpy's.
    assert_close(model.predict_log(test_X), expected)
    assert_close(model.predict_log(test_X[:1]), expected[:1])
    Za = model._augmented(model_inputs(test_X, model.input_names))
    assert_close(model._walk(Za), expected)
    compiled = model.compiled_walk()
    if compiled is not None:
        assert_close(compiled.predict(Za), expected)


def test_export_refuses_inputs_that_do_not_match_the_fit(train) -> None:  # type: ignore[no-untyped-def]
    X, y = train
    on_raw = DecisionTreeRegressor(max_depth=3).fit(X, y)
    with pytest.raises(ModelFormatError, match="model_inputs"):
        export_model(on_raw, FEATURES, input_names=DEFAULT_INPUTS)
    on_ten = DecisionTreeRegressor(max_depth=3).fit(model_inputs(X, DEFAULT_INPUTS), y)
    with pytest.raises(ModelFormatError, match="model_inputs"):
        export_model(on_ten, FEATURES)
    with pytest.raises(ModelFormatError, match="input_names"):
        export_model(on_ten, FEATURES, input_names=[*FEATURES, "x+y"])
    linear = make_pipeline(FunctionTransformer(linear_design), StandardScaler(), Ridge()).fit(X, y)
    with pytest.raises(ModelFormatError, match="raw features"):
        export_model(linear, FEATURES, input_names=DEFAULT_INPUTS)


def test_onnxruntime_batches_match_the_numpy_walk_or_are_not_used(train, test_X, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    X, y = train
    hgb = HistGradientBoostingRegressor(max_iter=30, max_leaf_nodes=15, random_state=0).fit(X, y)
    model = roundtrip(hgb)
    fast = model.fast_predictor()
    assert fast is not None
    # Rows exactly on split thresholds take the same branch (x <= t goes left) in both.
    nodes = hgb._predictors[0][0].nodes
    on_threshold = np.tile(test_X[:1], (int((~nodes["is_leaf"].astype(bool)).sum()), 1))
    splits = nodes[~nodes["is_leaf"].astype(bool)]
    on_threshold[np.arange(len(splits)), splits["feature_idx"]] = splits["num_threshold"]
    for rows in (test_X, on_threshold):
        np.testing.assert_allclose(fast.predict(rows), model._walk(rows), rtol=1e-12, atol=0)
    # (Grade thresholds sit between codes, so only measurements make valid stones here.)
    measured = ~np.isin(splits["feature_idx"], [FEATURES.index(f) for f in CATEGORIES])
    assert_close(model.predict_log(on_threshold[measured]), hgb.predict(on_threshold[measured]))
    assert_close(model.predict_log(test_X), hgb.predict(test_X))
    # A runtime that disagrees (simulated by an impossible tolerance) is logged and not used.
    monkeypatch.setattr(gemcast.model._OnnxTrees, "TOLERANCE", -1.0)
    again = roundtrip(hgb)
    with caplog.at_level("WARNING", logger="gemcast.model"):
        assert again.fast_predictor() is None
    assert "not used" in caplog.text
    assert_close(again.predict_log(test_X), hgb.predict(test_X))


def test_batches_use_the_numpy_walk_without_onnxruntime(train, test_X, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.split(".")[0] in ("onnx", "onnxruntime"):
            raise ImportError(f"no module named {name}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    hgb = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(*train)
    model = roundtrip(hgb)
    assert model.fast_predictor() is None
    assert_close(model.predict_log(test_X), hgb.predict(test_X))
