"""The scheduled training trigger: start a training job only when the curated data changed.

"Changed" means the snapshot id of all curated data differs from the one the champion was
trained on. At most one job per snapshot: the AWS handler wraps ``start_training`` in
powertools idempotency (DynamoDB) keyed by the snapshot id; the GCP function keeps a
Firestore document per snapshot. Submitting is a callable, so AWS Batch, a Vertex AI
CustomJob and a local subprocess run the same decision.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gemcast.ingest import CURATED, current_snapshot
from gemcast.registry import Registry
from gemcast.storage import Storage

logger = logging.getLogger(__name__)

Submitter = Callable[["TrainingPlan"], dict[str, Any]]


@dataclass(frozen=True)
class TrainingPlan:
    snapshot_id: str | None
    champion_snapshot_id: str | None
    needed: bool
    reason: str
    data_uri: str
    registry_uri: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan_training(data: Storage, registry: Registry) -> TrainingPlan:
    """Whether the curated data differs from the champion's training data."""
    snapshot = current_snapshot(data)
    data_uri = f"{data.uri.rstrip('/')}/{CURATED}"
    pointer = registry.champion()
    champion_snapshot = pointer.get("snapshot_id") if pointer else None
    if snapshot is None or not snapshot.get("snapshot_id") or snapshot.get("accepted", 0) == 0:
        return TrainingPlan(None, champion_snapshot, False, "no curated data yet", data_uri, registry.uri)
    snapshot_id = str(snapshot["snapshot_id"])
    if pointer is None:
        return TrainingPlan(snapshot_id, None, True, "no champion yet", data_uri, registry.uri)
    if snapshot_id == champion_snapshot:
        return TrainingPlan(snapshot_id, champion_snapshot, False,
                            f"data unchanged since the champion {pointer['version']} ({snapshot_id})",
                            data_uri, registry.uri)
    return TrainingPlan(snapshot_id, champion_snapshot, True,
                        f"data changed: {champion_snapshot} -> {snapshot_id}", data_uri, registry.uri)


def job_name(plan: TrainingPlan) -> str:
    """A job name from the snapshot (Batch: letters, digits, - and _; at most 128)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"gemcast-train-{plan.snapshot_id}")[:128]


def batch_submitter(client: Any, job_queue: str, job_definition: str) -> Submitter:
    """Submit to AWS Batch; the job definition's command takes Ref::data and Ref::registry."""

    def submit(plan: TrainingPlan) -> dict[str, Any]:
        response = client.submit_job(
            jobName=job_name(plan),
            jobQueue=job_queue,
            jobDefinition=job_definition,
            parameters={"data": plan.data_uri, "registry": plan.registry_uri},
        )
        return {"job_id": response["jobId"], "job_name": response["jobName"]}

    return submit
