"""EventBridge Scheduler (daily): submit the training job when the curated data changed; and
the drift alarm's state change (EventBridge rule DriftAlarmRule): submit one even when it did not.

At most one job per run key: the submit runs under powertools idempotency on DynamoDB,
keyed by the plan's run key (the snapshot id, or the snapshot and the alarm's moment), so a
retried schedule, a manual run or a second day with the same data returns the first job
instead of starting another. ``SUBMIT`` is the seam where the local runner
(gemcast_local.trigger) puts a subprocess in place of AWS Batch; nothing here knows.
"""

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from gemcast.aws import LazyClient
from gemcast.config import Settings
from gemcast.registry import Registry
from gemcast.storage import S3Storage, open_storage
from gemcast.trigger import Submitter, TrainingPlan, batch_submitter, plan_training, retrain_request

logger = Logger()
tracer = Tracer()
metrics = Metrics()

SETTINGS = Settings.from_env(
    required=("data_bucket", "registry_uri", "batch_job_queue", "batch_job_definition", "idempotency_table")
)
S3 = boto3.client("s3")
DATA = S3Storage(SETTINGS.data_bucket, client=S3)
REGISTRY = Registry(SETTINGS.registry_uri, storage=open_storage(SETTINGS.registry_uri, client=S3))
SUBMIT: Submitter = batch_submitter(
    LazyClient("batch"), SETTINGS.batch_job_queue, SETTINGS.batch_job_definition
)
ONE_JOB_PER_SNAPSHOT_S = 30 * 24 * 3600  # far longer than any schedule retry or re-run


def _replayed(response: Any, idempotent_data: DataRecord) -> Any:
    return {**response, "already_submitted": True}


IDEMPOTENCY = IdempotencyConfig(
    event_key_jmespath="run_key",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=ONE_JOB_PER_SNAPSHOT_S,
    response_hook=_replayed,
)


@idempotent_function(
    data_keyword_argument="plan",
    persistence_store=DynamoDBPersistenceLayer(table_name=SETTINGS.idempotency_table),
    config=IDEMPOTENCY,
)
def submit_once(plan: TrainingPlan) -> dict[str, Any]:
    job = SUBMIT(plan)
    return {**job, "snapshot_id": plan.snapshot_id, "run_key": plan.run_key}


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    IDEMPOTENCY.register_lambda_context(context)
    plan = plan_training(DATA, REGISTRY, retrain_request(event))
    logger.info(plan.reason, extra=plan.as_dict())
    job = submit_once(plan=plan) if plan.needed else None
    submitted = job is not None and not job.get("already_submitted", False)
    metrics.add_metric(name="TrainingJobsSubmitted", unit=MetricUnit.Count, value=int(submitted))
    return {"submitted": submitted, "plan": plan.as_dict(), **({"job": job} if job else {})}
