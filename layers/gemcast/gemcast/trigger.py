"""The scheduled training trigger: start a training job only when the curated data changed.

"Changed" means the snapshot id of all curated data differs from the one the champion was
trained on. At most one job per snapshot: the AWS handler wraps ``start_training`` in
powertools idempotency (DynamoDB) keyed by the plan's ``run_key`` (the snapshot id); the GCP
function keeps a Firestore document per run key. Submitting is a callable, so AWS Batch, a
Vertex AI CustomJob and a local subprocess run the same decision.

A drift alarm (``RetrainRequest``: the CloudWatch alarm's state change, or a Cloud Monitoring
incident) asks for a job even when the data did not change: the run key is then the snapshot
and the alarm's moment, so one alarm gives one job, and the promotion gate of that job still
decides whether its model replaces the champion.
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
    run_key: str | None = None  # one job per run key; the snapshot id unless a drift alarm asked

    def __post_init__(self) -> None:
        if self.run_key is None:
            object.__setattr__(self, "run_key", self.snapshot_id)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RetrainRequest:
    """A drift alarm asking for a training run whatever the data (see the module docstring)."""

    alarm: str
    at: str  # when the alarm fired, as the cloud says it; part of the run key

    @property
    def key(self) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "-", self.at)[:40]


def retrain_request(event: Any) -> RetrainRequest | None:
    """The request in an EventBridge "CloudWatch Alarm State Change" event entering ALARM, or in
    a Cloud Monitoring incident notification that opened; None for a schedule or anything else."""
    if not isinstance(event, dict):
        return None
    detail = event.get("detail")
    if event.get("detail-type") == "CloudWatch Alarm State Change" and isinstance(detail, dict):
        state = detail.get("state") or {}
        if state.get("value") == "ALARM":
            return RetrainRequest(str(detail.get("alarmName", "")), str(state.get("timestamp") or event.get("time")))
        return None
    incident = event.get("incident")
    if isinstance(incident, dict) and incident.get("state") == "open":
        return RetrainRequest(str(incident.get("policy_name", "")),
                              str(incident.get("started_at") or incident.get("incident_id", "")))
    return None


def plan_training(data: Storage, registry: Registry, request: RetrainRequest | None = None) -> TrainingPlan:
    """Whether the curated data differs from the champion's training data, or an alarm asks."""
    plan = _data_plan(data, registry)
    if request is None or plan.needed or plan.snapshot_id is None:
        return plan
    return TrainingPlan(plan.snapshot_id, plan.champion_snapshot_id, True,
                        f"drift alarm {request.alarm} at {request.at}: retraining on unchanged data "
                        f"{plan.snapshot_id}; the promotion gate decides", plan.data_uri, plan.registry_uri,
                        run_key=f"{plan.snapshot_id}-drift-{request.key}")


def _data_plan(data: Storage, registry: Registry) -> TrainingPlan:
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
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"gemcast-train-{plan.run_key}")[:128]


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
