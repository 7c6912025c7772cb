"""S3 ObjectCreated under raw/: clean each batch into curated/ and rejected/, load the inventory.

An unusable file (no header, every row bad) is recorded in rejected/<name>.error.json and
reported in the result, never raised: S3 invokes asynchronously, so a raise would only be
retried on the same bytes and end in the dead-letter queue. A redelivered event finds the
batch already ingested from the same content and changes nothing.
"""

from typing import Any
from urllib.parse import unquote_plus

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from gemcast.config import Settings
from gemcast.errors import NotFoundError, ValidationError
from gemcast.ingest import IngestResult, ingest_object
from gemcast.inventory import DynamoInventory
from gemcast.storage import S3Storage

logger = Logger()
tracer = Tracer()
metrics = Metrics()

SETTINGS = Settings.from_env(required=("inventory_table",))
S3 = boto3.client("s3")
INVENTORY = DynamoInventory(SETTINGS.inventory_table, resource=boto3.resource("dynamodb"))


@tracer.capture_method
def ingest(bucket: str, key: str) -> IngestResult:
    try:
        return ingest_object(S3Storage(bucket, client=S3), key, INVENTORY)
    except (ValidationError, NotFoundError) as exc:
        # Not a raw/<name>.csv batch, or deleted before we read it: retrying cannot help.
        logger.warning("skipped s3://%s/%s: %s", bucket, key, exc)
        return IngestResult(key, "skipped", error=str(exc))


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    results = [ingest(r.s3.bucket.name, unquote_plus(r.s3.get_object.key)) for r in event.records]
    for result in results:
        logger.info("ingest %s: %s", result.key, result.status, extra=result.as_dict())
        fresh = result.status == "ingested"  # a redelivered event counts no row twice
        metrics.add_metric(name="RowsAccepted", unit=MetricUnit.Count, value=result.accepted if fresh else 0)
        metrics.add_metric(name="RowsRejected", unit=MetricUnit.Count, value=result.rejected if fresh else 0)
        unusable = int(result.status == "unusable")
        metrics.add_metric(name="UnusableFiles", unit=MetricUnit.Count, value=unusable)
    return {"batches": [r.as_dict() for r in results],
            "unusable": [r.key for r in results if r.status == "unusable"]}
