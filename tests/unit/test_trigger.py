"""The training trigger's decision and its AWS Batch submission, on a local folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gemcast.registry import Registry
from gemcast.storage import FileStorage
from gemcast.trigger import TrainingPlan, batch_submitter, job_name, plan_training


@pytest.fixture
def data(tmp_path: Path) -> FileStorage:
    return FileStorage(tmp_path / "bucket")


@pytest.fixture
def registry(data: FileStorage) -> Registry:
    return Registry(f"{data.uri}/models", storage=data.child("models"))


def snapshot(data: FileStorage, snapshot_id: str, accepted: int = 10) -> None:
    record = {"snapshot_id": snapshot_id, "accepted": accepted}
    data.write_bytes("curated/_snapshot.json", json.dumps(record).encode())


def champion(data: FileStorage, snapshot_id: str | None) -> None:
    pointer = {"version": "v1", "snapshot_id": snapshot_id}
    data.write_bytes("models/champion.json", json.dumps(pointer).encode())


def test_no_curated_data_needs_no_training(data: FileStorage, registry: Registry) -> None:
    plan = plan_training(data, registry)
    assert not plan.needed and plan.snapshot_id is None and "no curated data" in plan.reason


def test_a_snapshot_where_every_row_was_rejected_needs_no_training(
    data: FileStorage, registry: Registry
) -> None:
    snapshot(data, "snap-a", accepted=0)
    assert not plan_training(data, registry).needed


def test_data_without_a_champion_needs_training(data: FileStorage, registry: Registry) -> None:
    snapshot(data, "snap-a")
    plan = plan_training(data, registry)
    assert plan.needed and plan.snapshot_id == "snap-a" and plan.reason == "no champion yet"


def test_data_the_champion_was_trained_on_needs_no_training(data: FileStorage, registry: Registry) -> None:
    snapshot(data, "snap-a")
    champion(data, "snap-a")
    plan = plan_training(data, registry)
    assert not plan.needed and "unchanged" in plan.reason and "v1" in plan.reason


def test_changed_data_needs_training_and_says_what_changed(data: FileStorage, registry: Registry) -> None:
    snapshot(data, "snap-b")
    champion(data, "snap-a")
    plan = plan_training(data, registry)
    assert plan.needed and plan.champion_snapshot_id == "snap-a" and "snap-a -> snap-b" in plan.reason
    # The job reads every curated batch (a folder URI) and publishes into the same registry.
    assert plan.data_uri == f"{data.uri}/curated/" and plan.registry_uri == registry.uri


def plan(snapshot_id: str | None) -> TrainingPlan:
    return TrainingPlan(snapshot_id, None, True, "r", "s3://b/curated/", "s3://b/models")


def test_job_names_fit_batch() -> None:
    assert job_name(plan("snap-1a2b")) == "gemcast-train-snap-1a2b"
    odd = job_name(plan("snap/with spaces:and.dots" + "x" * 200))
    assert len(odd) <= 128 and all(c.isalnum() or c in "-_" for c in odd)


class FakeBatch:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def submit_job(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {"jobId": "job-1", "jobName": kwargs["jobName"], "jobArn": "arn:aws:batch:::job/job-1"}


def test_batch_submitter_passes_the_data_and_registry_as_job_parameters() -> None:
    client = FakeBatch()
    submit = batch_submitter(client, "arn:queue", "arn:definition")

    job = submit(plan("snap-1"))

    assert job == {"job_id": "job-1", "job_name": "gemcast-train-snap-1"}
    (call,) = client.calls
    assert call["jobQueue"] == "arn:queue" and call["jobDefinition"] == "arn:definition"
    # The job definition's command uses Ref::data and Ref::registry.
    assert call["parameters"] == {"data": "s3://b/curated/", "registry": "s3://b/models"}
    # No tags: tagging a job needs batch:TagResource, which the function is not granted.
    assert "tags" not in call
