"""Training's model: the price-per-carat line carried by a tree, the blend, and what is exported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gemcast.model import load_model, model_inputs
from gemcast.pipeline import load_dataset
from gemcast.training import GBM_INPUTS, TrainConfig, carat_line, carat_tree, export, fit, split_indices

DATA = Path(__file__).resolve().parents[2] / "data" / "diamonds.csv"
SMALL = TrainConfig(max_trials=1, max_iter=60, blend=2, max_trees=120)


@pytest.fixture(scope="module")
def rows():
    clean = load_dataset(str(DATA))
    X_list, y_list = clean.matrix()
    X, y = np.asarray(X_list, dtype=float), np.asarray(y_list, dtype=float)
    train, test = split_indices(clean.accepted)
    return X, y, [clean.accepted[i] for i in train], train, test


@pytest.fixture(scope="module")
def trained(rows):
    X, y, stones, train, _test = rows
    return fit(X[train], y[train], stones, SMALL)


def test_the_carat_tree_holds_the_line_at_every_training_carat(rows):
    X, y, _stones, train, _test = rows
    Z = model_inputs(X[train], GBM_INPUTS)
    line = carat_line(Z, np.log(y[train]))
    assert 1.4 < line[0] < 2.0  # price grows like carat^a
    tree = carat_tree(Z, line, scale=3.0)
    expected = 3.0 * (line[0] * np.log(Z[:, 0]) + line[1])
    assert np.max(np.abs(tree.predict(Z) - expected)) < 1e-9
    used = tree.tree_.feature[tree.tree_.feature >= 0]
    assert set(used.tolist()) == {GBM_INPUTS.index("carat")}  # carat alone: its reason is the size


def test_the_parts_sum_to_the_log_price_and_the_file_predicts_what_was_fitted(rows, trained):
    X, _y, _stones, _train, test = rows
    weights = [w for _, w in trained.estimators]
    assert len(trained.estimators) == SMALL.blend + 1
    assert abs(sum(weights) - 1.0) < 1e-12  # a weighted average, as the exporter stores it
    Z = model_inputs(X[test], GBM_INPUTS)
    reference = sum(w * est.predict(Z) for est, w in trained.estimators)
    model = load_model(export(trained))
    assert np.max(np.abs(model.predict_log(X[test]) - reference)) < 1e-9
    assert trained.params["carat_line"]["leaves"] > 10
    assert trained.params["max_iter"] <= SMALL.max_trees // SMALL.blend


def test_the_explanation_of_the_sum_is_exact(rows, trained):
    X, _y, _stones, _train, test = rows
    model = load_model(export(trained))
    base, phi = model.explain(X[test[:20]])
    assert np.max(np.abs(base + phi.sum(axis=1) - model.predict_log(X[test[:20]]))) < 1e-9


def test_without_the_line_the_blend_is_the_members_average(rows):
    X, y, stones, train, _test = rows
    trained = fit(X[train], y[train], stones, TrainConfig(max_trials=1, max_iter=40, blend=2, max_trees=80,
                                                          carat_line=False))
    assert [w for _, w in trained.estimators] == [0.5, 0.5]
    assert "carat_line" not in trained.params
