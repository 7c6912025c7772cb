"""EventBridge Scheduler (daily): drift of the last window of the prediction log.

Reads the window's log items, compares them with the champion's training summary, writes
the report under monitoring/drift/ and publishes DriftScore (the DriftAlarm's metric) and one
FeatureDrift per feature by EMF. A window with too few stones publishes no DriftScore: the
alarm treats the missing point as not breaching. An event may name ``window_end`` and
``window_hours`` to check a past window (events/drift_check_past_window.json).
"""

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from gemcast.aws import from_item
from gemcast.config import Settings
from gemcast.drift import COUNTS, check_drift, dynamodb_items, metric_points, window_for
from gemcast.registry import Registry
from gemcast.storage import S3Storage, open_storage

logger = Logger()
tracer = Tracer()
metrics = Metrics()

SETTINGS = Settings.from_env(required=("data_bucket", "registry_uri", "prediction_log_table"))
S3 = boto3.client("s3")
REPORTS = S3Storage(SETTINGS.data_bucket, client=S3)
REGISTRY = Registry(SETTINGS.registry_uri, storage=open_storage(SETTINGS.registry_uri, client=S3))
LOG_TABLE = boto3.resource("dynamodb").Table(SETTINGS.prediction_log_table)


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    window = window_for(event, SETTINGS.drift_window_hours)
    report = check_drift(dynamodb_items(LOG_TABLE, window), from_item, REGISTRY, REPORTS, window,
                         threshold=SETTINGS.drift_threshold, min_stones=SETTINGS.drift_min_stones)
    for name, labels, value in metric_points(report):
        unit = MetricUnit.Count if name in COUNTS else MetricUnit.NoUnit
        if not labels:
            metrics.add_metric(name=name, unit=unit, value=value)
            continue
        with single_metric(name=name, unit=unit, value=value, namespace=metrics.namespace) as metric:
            for key, label in labels.items():
                metric.add_dimension(name=key, value=label)
    logger.info(report["message"], extra={"status": report["status"], "score": report["score"]})
    return {k: report[k] for k in ("status", "message", "score", "worst_feature", "alarm", "counts", "report_uri")}
