"""The compiled tree walk: the same leaves as a plain walk of the model file's trees, the prices of
the numpy walk and of scikit-learn, float32 thresholds included; and the model without it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gemcast import tree_walk
from gemcast.model import COMPILED_MAX_ROWS, DEFAULT_INPUTS, _OnnxTrees, load_model, model_inputs, save_model
from gemcast.schema import FEATURES

sklearn = pytest.importorskip("sklearn")
if tree_walk.kernel() is None:
    pytest.skip("numba is not installed: no compiled walk", allow_module_level=True)

from sklearn.ensemble import (  # noqa: E402
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeRegressor  # noqa: E402

from gemcast.export import export_model  # noqa: E402

from .test_export import RTOL, synthetic  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_openmp_thread():  # type: ignore[no-untyped-def]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def plain_leaves(model, Xa: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Every (row, tree)'s leaf by the file's own arrays: x > threshold goes right, float32 trees
    read the float32 copy of x; answered as the flat node tree * nodes + node."""
    T, M, F = model._T, model._M, model._F
    trees = np.arange(T)[None, :]
    rows = np.arange(Xa.shape[0])[:, None]
    node = np.zeros((Xa.shape[0], T), dtype=np.intp)
    for _ in range(M):
        feature = model._feature[trees, node]
        split = feature >= 0
        x = Xa[rows, np.where(split, feature + F * model._as32[None, :], 0)]
        right = x > model._threshold[trees, node]
        node = np.where(split, np.where(right, model._right[trees, node], model._left[trees, node]), node)
    return trees * M + node


ESTIMATORS = [
    HistGradientBoostingRegressor(max_iter=40, max_leaf_nodes=15, random_state=0),  # float64 thresholds
    RandomForestRegressor(n_estimators=10, max_depth=8, random_state=0),  # float32 thresholds
    ExtraTreesRegressor(n_estimators=8, min_samples_leaf=3, random_state=0),
    GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0),
]


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_the_compiled_walk_reaches_the_plain_walks_leaves_and_sklearns_prices(estimator) -> None:  # type: ignore[no-untyped-def]
    X, y = synthetic(1200, seed=4)
    estimator.fit(X, y)
    model = load_model(save_model(export_model(estimator, FEATURES)))
    compiled = model.compiled_walk()
    assert compiled is not None
    test_X = synthetic(300, seed=5)[0]
    Za = model._augmented(model_inputs(test_X, model.input_names))
    # Rows whose every value sits exactly on a threshold, or one ulp either side of it.
    probe = _OnnxTrees._probe(model)
    for rows in (Za, probe, Za[:1], Za[:COMPILED_MAX_ROWS - 1]):
        np.testing.assert_array_equal(compiled.leaves(rows), plain_leaves(model, rows))
        np.testing.assert_allclose(compiled.predict(rows), model._walk(rows), rtol=1e-12, atol=0)
    np.testing.assert_allclose(compiled.predict(Za), estimator.predict(test_X), rtol=RTOL, atol=0)
    # Small batches take it inside predict_log; each stone alone is priced as in its batch.
    few = test_X[: COMPILED_MAX_ROWS - 1]
    np.testing.assert_array_equal(model.predict_log(few), compiled.predict(Za[: COMPILED_MAX_ROWS - 1]))
    alone = np.concatenate([model.predict_log(row) for row in few])
    np.testing.assert_allclose(alone, estimator.predict(few), rtol=RTOL, atol=0)


def test_float32_thresholds_and_a_tree_that_is_one_leaf() -> None:
    # sklearn's trees compare float32(x) <= threshold: 1.5 + 1e-9 goes left there, right in float64.
    X = np.tile(synthetic(4, seed=3)[0][:1], (40, 1))
    X[:20, 0], X[20:, 0] = 1.0, 2.0
    split = DecisionTreeRegressor(max_depth=1).fit(X, np.where(X[:, 0] < 1.5, 7.0, 9.0))
    lone = DecisionTreeRegressor().fit(X, np.full(40, 3.0))  # no split at all
    model = load_model(save_model(export_model([split, lone], FEATURES, weights=[0.5, 0.5])))
    probe = X[:3].copy()
    probe[:, 0] = [1.5 + 1e-9, 1.5 + 1e-6, 1.5]
    Za = model._augmented(model_inputs(probe, model.input_names))
    compiled = model.compiled_walk()
    assert compiled is not None
    np.testing.assert_array_equal(compiled.leaves(Za), plain_leaves(model, Za))
    expected = (split.predict(probe) + lone.predict(probe)) / 2
    np.testing.assert_array_equal(expected, [5.0, 6.0, 5.0])
    np.testing.assert_array_equal(compiled.predict(Za), expected)
    np.testing.assert_array_equal(model.predict_log(probe), expected)


def test_derived_inputs_and_a_model_without_the_compiled_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = synthetic(800, seed=6)
    hgb = HistGradientBoostingRegressor(max_iter=30, max_features=0.5, random_state=0)
    hgb.fit(model_inputs(X, DEFAULT_INPUTS), y)
    exported = save_model(export_model(hgb, FEATURES, input_names=DEFAULT_INPUTS))
    test_X = synthetic(40, seed=7)[0]
    expected = hgb.predict(model_inputs(test_X, DEFAULT_INPUTS))
    with_it = load_model(exported)
    np.testing.assert_allclose(with_it.predict_log(test_X[:3]), expected[:3], rtol=RTOL, atol=0)
    monkeypatch.setattr(tree_walk, "_KERNEL", None)  # as without numba
    monkeypatch.setattr(tree_walk, "_TRIED", True)
    without = load_model(exported)
    assert without.compiled_walk() is None
    for rows in (test_X[:1], test_X[:3], test_X):
        np.testing.assert_allclose(without.predict_log(rows), expected[: len(rows)], rtol=RTOL, atol=0)


def test_a_batch_split_over_the_cores_is_priced_and_explained_as_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = synthetic(800, seed=8)
    hgb = HistGradientBoostingRegressor(max_iter=25, random_state=0).fit(model_inputs(X, DEFAULT_INPUTS), y)
    model = load_model(save_model(export_model(hgb, FEATURES, input_names=DEFAULT_INPUTS)))
    rows = synthetic(301, seed=9)[0]
    monkeypatch.setattr(tree_walk, "PARALLEL_MIN_ROWS", 10**9)
    prices, (base, phi) = model.predict_log(rows), model.explain(rows)
    monkeypatch.setattr(tree_walk, "PARALLEL_MIN_ROWS", 2)
    pool = ThreadPoolExecutor(1)  # two blocks, even on one core
    monkeypatch.setattr(tree_walk, "_row_pool", lambda: pool)
    np.testing.assert_array_equal(model.predict_log(rows), prices)
    split_base, split_phi = model.explain(rows)
    assert split_base == base
    np.testing.assert_array_equal(split_phi, phi)
    np.testing.assert_allclose(prices, hgb.predict(model_inputs(rows, DEFAULT_INPUTS)), rtol=RTOL, atol=0)
    pool.shutdown()
