"""Registry: the package contract, history, the gate, tamper refusal, atomic pointer, rollback."""

from __future__ import annotations

import json

import pytest

from gemcast.errors import GateError, IntegrityError, NotFoundError, StorageError
from gemcast.registry import ModelPackage, Registry, gate
from gemcast.storage import FileStorage


def package(version: str, mae: float) -> ModelPackage:
    return ModelPackage(
        files={"model.npz": f"model {version}".encode(), "model_card.md": b"# card\n"},
        manifest={"version": version, "created": "2026-01-01T00:00:00Z", "model": {"kind": "gbm"},
                  "data": {"snapshot_id": "snap-1"}, "metrics": {"holdout": {"mae": mae, "mape": 6.0}}},
    )


@pytest.fixture
def registry(tmp_path):
    return Registry((tmp_path / "models").as_uri())


def test_publish_writes_every_file_with_its_sha256(registry, tmp_path):
    registry.publish(package("v1", 300.0))
    manifest = registry.manifest("v1")
    assert set(manifest["files"]) == {"model.npz", "model_card.md"}
    assert len(manifest["files"]["model.npz"]) == 64
    assert registry.versions() == ["v1"]
    with pytest.raises(StorageError, match="already exists"):
        registry.publish(package("v1", 1.0))


def test_history_lists_every_model_and_marks_the_champion(registry):
    registry.publish(package("v1", 300.0))
    registry.publish(package("v2", 250.0))
    registry.promote("v2", reason="better")
    rows = registry.history()
    assert [r["version"] for r in rows] == ["v1", "v2"]
    assert [r["champion"] for r in rows] == [False, True]
    assert rows[1]["metrics"]["mae"] == 250.0


def test_gate_needs_a_strict_improvement_by_the_margin():
    assert gate({"mae": 100.0}, None).promote
    assert gate({"mae": 99.0}, {"mae": 100.0}).promote
    assert not gate({"mae": 100.0}, {"mae": 100.0}).promote  # equal is not better
    assert not gate({"mae": 99.5}, {"mae": 100.0}, margin=0.01).promote
    assert gate({"mae": 98.9}, {"mae": 100.0}, margin=0.01).promote
    assert gate({"mae": 1.0, "mape": 9.0}, {"mae": 2.0, "mape": 5.0}, metric="mape").promote is False
    with pytest.raises(GateError):
        gate({"mae": 1.0}, None, metric="accuracy")


def test_a_tampered_model_is_refused_loudly(registry, tmp_path):
    registry.publish(package("v1", 300.0))
    (tmp_path / "models" / "v1" / "model.npz").write_bytes(b"evil")
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        registry.read_file("v1", "model.npz")
    with pytest.raises(IntegrityError):
        registry.promote("v1", reason="x")
    assert registry.champion() is None


def test_promote_replaces_the_pointer_whole_and_keeps_history(registry, tmp_path):
    registry.publish(package("v1", 300.0))
    registry.publish(package("v2", 250.0))
    registry.promote("v1", reason="first")
    registry.promote("v2", reason="better")
    pointer = json.loads((tmp_path / "models" / "champion.json").read_text())
    assert pointer["version"] == "v2" and pointer["previous"] == "v1"
    assert [h["version"] for h in pointer["history"]] == ["v1", "v2"]
    # The pointer is written by rename: no temporary file is ever left beside it.
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["champion.json", "v1", "v2"]


def test_rollback_is_one_call(registry):
    for v, mae in (("v1", 300.0), ("v2", 250.0), ("v3", 240.0)):
        registry.publish(package(v, mae))
        registry.promote(v, reason="train")
    assert registry.rollback()["version"] == "v2"
    assert registry.rollback("v1")["version"] == "v1"
    assert registry.champion()["history"][-1]["action"] == "rollback"
    with pytest.raises(GateError, match="already"):
        registry.rollback("v1")


def test_missing_things_are_named(registry):
    with pytest.raises(NotFoundError, match="no champion"):
        registry.load_champion()
    with pytest.raises(NotFoundError, match="v9"):
        registry.manifest("v9")
    with pytest.raises(NotFoundError, match="nothing to roll back"):
        registry.rollback()


def test_a_version_without_its_manifest_does_not_exist(tmp_path):
    store = FileStorage(tmp_path)
    store.write_bytes("half/model.npz", b"partial upload")
    assert Registry(tmp_path.as_uri(), storage=store).versions() == []
