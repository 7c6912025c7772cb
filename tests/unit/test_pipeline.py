"""Training end to end on the bundled sample: clean, train, score, gate, publish, promote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gemcast.errors import DatasetError
from gemcast.pipeline import load_dataset, run_training
from gemcast.registry import Registry

DATA = Path(__file__).resolve().parents[2] / "data" / "diamonds.csv"
QUIET = {"budget_s": 30.0, "max_trials": 1, "max_iter": 120}


def silent():
    from gemcast.pipeline import Progress

    lines: list[str] = []
    return Progress(lines.append), lines


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One linear champion, then a gbm challenger, in one registry."""
    root = tmp_path_factory.mktemp("registry")
    uri = (root / "models").as_uri()
    progress, lines = silent()
    first = run_training(str(DATA), uri, kind="linear", progress=progress)
    second = run_training(str(DATA), uri, kind="gbm", progress=silent()[0], **QUIET)
    return uri, first, second, lines


def test_stages_are_reported_with_timings(trained):
    _uri, _first, _second, lines = trained
    for stage in ("loading", "cleaning", "search", "evaluation", "gate", "package", "promote"):
        assert any(line.startswith(f"[{stage}] done in") for line in lines), stage


def test_the_package_holds_the_contract(trained):
    uri, first, _second, _lines = trained
    registry = Registry(uri)
    manifest = registry.manifest(first.version)
    assert set(manifest["files"]) >= {"model.npz", "metrics.json", "model_card.md", "pred_vs_actual.svg",
                                      "rejected.jsonl"}
    assert manifest["data"]["accepted"] + manifest["data"]["rejected"] == 5000
    assert manifest["data"]["snapshot_id"].startswith("snap-")
    assert manifest["libraries"]["scikit-learn"] and manifest["libraries"]["numpy"]
    assert manifest["metrics"]["holdout"]["n"] == manifest["data"]["holdout_rows"]
    card = registry.read_file(first.version, "model_card.md").decode()
    assert "pred_vs_actual.svg" in card and "MAPE" in card
    rejected = registry.read_file(first.version, "rejected.jsonl").decode().splitlines()
    assert len(rejected) == manifest["data"]["rejected"]
    assert registry.read_file(first.version, "pred_vs_actual.svg").startswith(b"<svg")


def test_a_better_model_is_promoted_and_scored_on_the_same_rows(trained):
    uri, first, second, _lines = trained
    assert first.promoted and first.decision.reason == "no champion yet"
    assert second.promoted, second.decision.reason
    manifest = Registry(uri).manifest(second.version)
    assert manifest["metrics"]["champion_version"] == first.version
    # the champion re-scored on the candidate's rows equals its own held-out score
    assert manifest["metrics"]["champion_on_same_rows"]["mae"] == pytest.approx(first.metrics["mae"])
    assert Registry(uri).champion()["version"] == second.version


def test_a_worse_model_is_never_promoted(trained, tmp_path):
    uri, _first, second, _lines = trained
    outcome = run_training(str(DATA), uri, kind="linear", progress=silent()[0])
    assert not outcome.promoted
    assert "does not beat" in outcome.decision.reason
    assert Registry(uri).champion()["version"] == second.version
    assert Registry(uri).manifest(outcome.version)["gate"]["promote"] is False


def test_training_is_reproducible(tmp_path):
    a = run_training(str(DATA), (tmp_path / "a").as_uri(), kind="gbm", progress=silent()[0], **QUIET)
    b = run_training(str(DATA), (tmp_path / "b").as_uri(), kind="gbm", progress=silent()[0], **QUIET)
    assert a.metrics == b.metrics
    ra, rb = Registry((tmp_path / "a").as_uri()), Registry((tmp_path / "b").as_uri())
    assert ra.manifest(a.version)["files"]["model.npz"] == rb.manifest(b.version)["files"]["model.npz"]


def test_the_served_model_matches_what_was_scored(trained):
    uri, _first, second, _lines = trained
    loaded = Registry(uri).load_champion()
    stone = np.array([[0.7, 4, 5, 4, 61.8, 56, 5.7, 5.73, 3.53]])
    assert loaded.model.predict(stone)[0] > 0
    assert json.loads(Registry(uri).storage.read_bytes(f"{second.version}/metrics.json"))["holdout"] == second.metrics


@pytest.mark.parametrize("text", ["", "carat,cut\n1,Ideal\n", "carat,cut,color,clarity,depth,table,price,x,y,z\n"])
def test_no_model_is_trained_from_an_unusable_file(tmp_path, text):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    registry = (tmp_path / "models").as_uri()
    with pytest.raises(DatasetError):
        run_training(str(bad), registry, kind="linear", progress=silent()[0])
    assert Registry(registry).versions() == []


def test_a_folder_of_batches_is_one_dataset(tmp_path):
    folder = tmp_path / "curated"
    folder.mkdir()
    lines = DATA.read_text().splitlines(keepends=True)
    (folder / "a.csv").write_text("".join(lines[:2001]))
    (folder / "b.csv").write_text(lines[0] + "".join(lines[2001:]))
    (folder / "_snapshot.json").write_text("{}")
    result = load_dataset(folder.as_uri() + "/")
    assert result.total == 5000


def test_a_card_of_curated_data_points_to_the_rows_rejected_at_ingest():
    from gemcast.card import model_card

    card = model_card({"version": "v1", "data": {"uri": "s3://bucket/curated/", "rejected_by_reason": {}},
                       "model": {}, "metrics": {}})
    assert "`s3://bucket/rejected/`" in card
    assert "rejected/" not in model_card({"version": "v1", "data": {"uri": "data/diamonds.csv"}, "model": {},
                                          "metrics": {}}).split("rejected.jsonl")[1]
