"""The numpy model: exact explanations, reasons that add up, and model files that cannot lie."""

from __future__ import annotations

import io
import itertools
import math
import subprocess
import sys
import zipfile
from collections.abc import Callable

import numpy as np
import pytest

from gemcast import treeshap_kernel
from gemcast.errors import ValidationError
from gemcast.model import (
    DEFAULT_INPUTS,
    META_KEY,
    ModelFormatError,
    linear_design,
    load_model,
    metadata_array,
    model_inputs,
    read_metadata,
    save_model,
)
from gemcast.schema import FEATURES

sklearn = pytest.importorskip("sklearn")

from sklearn.ensemble import (  # noqa: E402
    ExtraTreesRegressor,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402

from gemcast.export import export_model  # noqa: E402

from .test_export import synthetic  # noqa: E402

N = len(FEATURES)


@pytest.fixture(autouse=True, scope="module")
def one_openmp_thread():  # type: ignore[no-untyped-def]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


# ---------------------------------------------------------------- brute force, from sklearn itself


def sklearn_tree_value(tree, x32: np.ndarray, S: frozenset[int]) -> float:  # type: ignore[no-untyped-def]
    """Lundberg et al. Algorithm 1 (EXPVALUE) on an sklearn Tree: follow x on S, else cover-average."""

    def walk(node: int) -> float:
        left, right = tree.children_left[node], tree.children_right[node]
        if left < 0:
            return float(tree.value[node, 0, 0])
        f = tree.feature[node]
        if f in S:
            return walk(left if x32[f] <= tree.threshold[node] else right)
        w = tree.weighted_n_node_samples
        return (w[left] * walk(left) + w[right] * walk(right)) / w[node]

    return walk(0)


def hgb_tree_value(nodes: np.ndarray, x: np.ndarray, S: frozenset[int]) -> float:
    def walk(node: int) -> float:
        rec = nodes[node]
        if rec["is_leaf"]:
            return float(rec["value"])
        left, right, f = int(rec["left"]), int(rec["right"]), int(rec["feature_idx"])
        if f in S:
            return walk(left if x[f] <= rec["num_threshold"] else right)
        c = nodes["count"].astype(float)
        return (c[left] * walk(left) + c[right] * walk(right)) / c[node]

    return walk(0)


def brute_shapley(value: Callable[[frozenset[int]], float], N: int = N) -> tuple[float, np.ndarray]:
    """Shapley values of the N-player game by enumerating all 2^N coalitions."""
    v = {frozenset(S): value(frozenset(S)) for k in range(N + 1) for S in itertools.combinations(range(N), k)}
    phi = np.zeros(N)
    for i in range(N):
        for S, vS in v.items():
            if i not in S:
                weight = math.factorial(len(S)) * math.factorial(N - len(S) - 1) / math.factorial(N)
                phi[i] += weight * (v[S | {i}] - vS)
    return v[frozenset()], phi


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return synthetic(600, seed=11)


@pytest.fixture(params=["compiled", "numpy"])
def kernel(request, monkeypatch):  # type: ignore[no-untyped-def]
    """Each explanation kernel in turn: the compiled one (when numba is here) and numpy's."""
    if request.param == "numpy":
        monkeypatch.setattr(treeshap_kernel, "_KERNEL", None)
        monkeypatch.setattr(treeshap_kernel, "_TRIED", True)
    elif treeshap_kernel.kernel() is None:
        pytest.skip("numba is not installed: no compiled kernel")
    return request.param


def test_tree_shapley_equals_brute_force_enumeration(data, kernel) -> None:  # type: ignore[no-untyped-def]
    X, y = data
    hgb = HistGradientBoostingRegressor(max_iter=3, max_leaf_nodes=8, random_state=0).fit(X, y)
    forest = ExtraTreesRegressor(n_estimators=2, max_depth=4, random_state=0).fit(X, y)
    weights = (0.75, 0.25)
    model = load_model(save_model(export_model([hgb, forest], FEATURES, weights=list(weights))))
    stones = synthetic(3, seed=12)[0]
    base, phi = model.explain(stones)
    for row, x in enumerate(stones):
        x32 = x.astype(np.float32)

        def value(S: frozenset[int], x: np.ndarray = x, x32: np.ndarray = x32) -> float:
            v_hgb = float(hgb._baseline_prediction.ravel()[0]) + sum(
                hgb_tree_value(p.nodes, x, S) for (p,) in hgb._predictors
            )
            v_forest = np.mean([sklearn_tree_value(e.tree_, x32, S) for e in forest.estimators_])
            return weights[0] * v_hgb + weights[1] * v_forest

        brute_base, brute_phi = brute_shapley(value)
        assert base == pytest.approx(brute_base, rel=1e-12)
        np.testing.assert_allclose(phi[row], brute_phi, rtol=1e-9, atol=1e-12)
        # Sanity: the full coalition is the model's own prediction.
        assert value(frozenset(range(N))) == pytest.approx(float(model.predict_log(x)[0]), rel=1e-12)


def test_compiled_kernel_agrees_with_numpy_on_every_path(data, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Many stones (tabulated leaves read block by block), few (short tables, quadrature for the
    # rest), and no tables at all: the same phi as the numpy kernel, which brute force checks.
    if treeshap_kernel.kernel() is None:
        pytest.skip("numba is not installed: no compiled kernel")
    X, y = data
    hgb = HistGradientBoostingRegressor(max_iter=20, max_leaf_nodes=24, random_state=0).fit(X, y)
    forest = ExtraTreesRegressor(n_estimators=3, max_depth=7, random_state=0).fit(X, y)
    data_bytes = save_model(export_model([hgb, forest], FEATURES, weights=[0.5, 0.5]))
    stones = synthetic(150, seed=13)[0]
    phis = {}
    for name, table_values in (("tables", treeshap_kernel.TABLE_VALUES), ("quadrature", 0)):
        monkeypatch.setattr(treeshap_kernel, "TABLE_VALUES", table_values)
        model = load_model(data_bytes)
        phis[name] = np.vstack([model.explain(stones)[1], model.explain(stones[:3])[1]])
    monkeypatch.setattr(treeshap_kernel, "_KERNEL", None)
    monkeypatch.setattr(treeshap_kernel, "_TRIED", True)
    model = load_model(data_bytes)
    expected = np.vstack([model.explain(stones)[1], model.explain(stones[:3])[1]])
    for got in phis.values():
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_shapley_over_a_derived_input_equals_brute_force(data) -> None:  # type: ignore[no-untyped-def]
    # Fitted on the 9 features plus the derived inputs: every coalition of the players is checked.
    X, y = data
    Z = model_inputs(X, DEFAULT_INPUTS)
    y = y + 0.3 * (Z[:, 9] - 1.0)  # give the length/width ratio something to explain
    hgb = HistGradientBoostingRegressor(max_iter=3, max_leaf_nodes=8, random_state=0).fit(Z, y)
    forest = ExtraTreesRegressor(n_estimators=2, max_depth=4, random_state=0).fit(Z, y)
    arrays = export_model([hgb, forest], FEATURES, weights=[0.5, 0.5], input_names=DEFAULT_INPUTS)
    model = load_model(save_model(arrays))
    assert model.input_names == DEFAULT_INPUTS
    stones = synthetic(2, seed=14)[0]
    base, phi = model.explain(stones)
    assert phi.shape == (2, len(DEFAULT_INPUTS))
    n = len(DEFAULT_INPUTS)
    for row, z in enumerate(model_inputs(stones, DEFAULT_INPUTS)):
        z32 = z.astype(np.float32)

        def value(S: frozenset[int], z: np.ndarray = z, z32: np.ndarray = z32) -> float:
            v_hgb = float(hgb._baseline_prediction.ravel()[0]) + sum(
                hgb_tree_value(p.nodes, z, S) for (p,) in hgb._predictors
            )
            v_forest = np.mean([sklearn_tree_value(e.tree_, z32, S) for e in forest.estimators_])
            return 0.5 * v_hgb + 0.5 * v_forest

        brute_base, brute_phi = brute_shapley(value, n)
        assert base == pytest.approx(brute_base, rel=1e-12)
        np.testing.assert_allclose(phi[row], brute_phi, rtol=1e-9, atol=1e-12)
    # The reasons name the derived input, with its value, and still add up to the price gap.
    reasons = model.reasons(stones[0])
    by_name = {r["feature"]: r for r in reasons}
    assert set(by_name) == set(DEFAULT_INPUTS)
    ratio = by_name["x/y"]
    assert ratio["value"] == pytest.approx(stones[0, 6] / stones[0, 7])
    assert ratio["label"] == "length / width" and "round" in ratio["description"]
    assert all(r["label"] and r["description"] for r in reasons)
    price = float(model.predict(stones[0])[0])
    assert sum(r["effect_usd"] for r in reasons) == pytest.approx(price - model.base_price, rel=1e-9)


def test_an_old_file_without_input_names_still_loads_and_predicts(data) -> None:  # type: ignore[no-untyped-def]
    X, y = data
    tree = RandomForestRegressor(n_estimators=3, max_depth=5, random_state=0).fit(X, y)
    arrays = export_model(tree, FEATURES)
    meta = read_metadata(arrays)
    del meta["input_names"]  # as files were written before derived inputs existed
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{**arrays, META_KEY: metadata_array(meta)})
    model = load_model(buffer.getvalue())
    assert model.input_names == FEATURES
    np.testing.assert_allclose(model.predict_log(X[:50]), tree.predict(X[:50]), rtol=1e-12)
    assert [r["feature"] for r in model.reasons(X[0])].count("x/y") == 0
    # A file naming an input this code cannot compute is refused, not guessed at.
    strange = {**arrays, META_KEY: metadata_array({**meta, "input_names": [*FEATURES, "x*y"]})}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **strange)
    with pytest.raises(ModelFormatError, match="input_names"):
        load_model(buffer.getvalue())


def test_model_inputs_computes_the_ratio_and_refuses_unknown_names() -> None:
    X = synthetic(5, seed=15)[0]
    Z = model_inputs(X, DEFAULT_INPUTS)
    np.testing.assert_array_equal(Z[:, :9], X)
    np.testing.assert_array_equal(Z[:, 9], X[:, 6] / X[:, 7])
    two = model_inputs(X, ["y", "x/y"])
    np.testing.assert_array_equal(two, np.column_stack([X[:, 7], X[:, 6] / X[:, 7]]))
    with pytest.raises(ModelFormatError):
        model_inputs(X, [*FEATURES, "volume"])
    flat = X[:1].copy()
    flat[0, 7] = 0.0
    with pytest.raises(ValidationError, match="x/y"):
        model_inputs(flat, DEFAULT_INPUTS)


def test_explanations_add_up_to_the_prediction_on_a_bigger_ensemble(data) -> None:  # type: ignore[no-untyped-def]
    X, y = data
    hgb = HistGradientBoostingRegressor(max_iter=150, max_leaf_nodes=31, random_state=0).fit(X, y)
    rf = RandomForestRegressor(n_estimators=10, max_depth=10, random_state=0).fit(X, y)
    model = load_model(save_model(export_model([hgb, rf], FEATURES, weights=[0.8, 0.2])))
    stones = synthetic(40, seed=13)[0]
    base, phi = model.explain(stones)
    np.testing.assert_allclose(phi.sum(axis=1), model.predict_log(stones) - base, rtol=0, atol=1e-9)
    # Carat drives price in the data; it must dominate the explanation of a large stone.
    big = stones[np.argmax(stones[:, 0])]
    assert np.argmax(np.abs(model.explain(big)[1][0])) == FEATURES.index("carat")
    # The base is the cover-weighted mean prediction: close to the mean training target.
    assert base == pytest.approx(float(y.mean()), abs=0.05)


def test_linear_shapley_equals_brute_force_interventional(data) -> None:  # type: ignore[no-untyped-def]
    X, y = data
    background = X[:40]
    pipe = make_pipeline(FunctionTransformer(linear_design), StandardScaler(), Ridge(alpha=0.5)).fit(
        background, y[:40]
    )
    model = load_model(save_model(export_model(pipe, FEATURES)))
    x = X[100]

    def value(S: frozenset[int]) -> float:
        mixed = background.copy()
        mixed[:, list(S)] = x[list(S)]
        return float(pipe.predict(mixed).mean())

    brute_base, brute_phi = brute_shapley(value)
    base, phi = model.explain(x)
    assert base == pytest.approx(brute_base, rel=1e-12)
    np.testing.assert_allclose(phi[0], brute_phi, rtol=1e-9, atol=1e-12)
    assert phi[0].sum() == pytest.approx(float(model.predict_log(x)[0]) - base, abs=1e-12)


def test_reasons_share_out_the_price_difference(data) -> None:  # type: ignore[no-untyped-def]
    X, y = data
    model = load_model(
        save_model(export_model(HistGradientBoostingRegressor(max_iter=30).fit(X, y), FEATURES))
    )
    x = X[7]
    reasons = model.reasons(x)
    price = float(model.predict(x)[0])
    assert [r["feature"] for r in reasons] != []
    assert sorted(r["feature"] for r in reasons) == sorted(FEATURES)
    assert sum(r["effect_usd"] for r in reasons) == pytest.approx(
        price - model.base_price, rel=1e-9, abs=1e-6
    )
    effects = [abs(r["effect_usd"]) for r in reasons]
    assert effects == sorted(effects, reverse=True)
    _, phi = model.explain(x)
    by_name = {r["feature"]: r for r in reasons}
    for i, f in enumerate(FEATURES):
        assert by_name[f]["effect_pct"] == pytest.approx((math.exp(phi[0, i]) - 1) * 100)
        assert np.sign(by_name[f]["effect_usd"]) == np.sign(phi[0, i])
    assert by_name["cut"]["value"] in ("Fair", "Good", "Very Good", "Premium", "Ideal")
    with pytest.raises(ValidationError):
        model.reasons(X[:2])


# ---------------------------------------------------------------- the file format


@pytest.fixture(scope="module")
def model_bytes(data) -> bytes:  # type: ignore[no-untyped-def]
    X, y = data
    return save_model(export_model(RandomForestRegressor(n_estimators=3, max_depth=4).fit(X, y), FEATURES))


def test_save_and_load_round_trip_bytes(model_bytes, data) -> None:  # type: ignore[no-untyped-def]
    model = load_model(model_bytes)
    again = load_model(model.to_bytes())
    X = data[0][:50]
    np.testing.assert_array_equal(again.predict_log(X), model.predict_log(X))
    assert again.metadata == model.metadata
    assert model.metadata["kind"] == "tree_ensemble" and model.n_trees == 3
    assert model.metadata["components"][0]["params"]["n_estimators"] == 3
    tagged = load_model(save_model(model.arrays, {"version": "v1"}))
    assert tagged.metadata["version"] == "v1"


def test_refuses_a_file_that_is_not_an_npz() -> None:
    import pickle

    for data in (b"", b"not a model", pickle.dumps({"a": 1}), b"PK\x03\x04broken"):
        with pytest.raises(ModelFormatError):
            load_model(data)
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3))  # a bare .npy is not a model file either
    with pytest.raises(ModelFormatError):
        load_model(buffer.getvalue())


def test_refuses_object_arrays_and_never_unpickles(model_bytes) -> None:  # type: ignore[no-untyped-def]
    with np.load(io.BytesIO(model_bytes), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["payload"] = np.array([{"evil": True}], dtype=object)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # written by someone else, with a pickled object array inside
    with pytest.raises(ModelFormatError, match="unreadable|dtype"):
        load_model(buffer.getvalue())
    with pytest.raises(ModelFormatError, match="objects"):
        save_model(arrays)


def test_refuses_malformed_contents(model_bytes) -> None:  # type: ignore[no-untyped-def]
    with np.load(io.BytesIO(model_bytes), allow_pickle=False) as npz:
        good = {k: npz[k] for k in npz.files}

    def write(arrays: dict[str, np.ndarray]) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    no_meta = {k: v for k, v in good.items() if k != META_KEY}
    with pytest.raises(ModelFormatError, match="__meta__"):
        load_model(write(no_meta))
    meta = read_metadata(good)
    for change in ({"format_version": 99}, {"kind": "neural_net"}, {"feature_names": ["carat"]}):
        with pytest.raises(ModelFormatError):
            load_model(write({**good, META_KEY: metadata_array({**meta, **change})}))
    looping = good["tree_left"].copy()
    looping[0, 0] = 0  # the root as its own child would walk forever
    with pytest.raises(ModelFormatError, match="forward"):
        load_model(write({**good, "tree_left": looping}))
    with pytest.raises(ModelFormatError, match="shape"):
        load_model(write({**good, "tree_value": good["tree_value"][:, :2]}))
    assert zipfile.is_zipfile(io.BytesIO(model_bytes))


def test_model_module_does_not_import_sklearn() -> None:
    code = "import sys, gemcast.model; assert 'sklearn' not in sys.modules and 'pandas' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
