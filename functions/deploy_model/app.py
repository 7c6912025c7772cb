"""S3 ObjectCreated on models/champion.json: roll the SageMaker endpoint to the new champion.

The event only says "the champion changed"; the pointer itself is read from the registry, so
a late or redelivered event deploys whatever is champion now, and one already in service
changes nothing. A failure raises: S3 invokes asynchronously, Lambda retries, then the
dead-letter queue keeps the event for an operator.
"""

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from gemcast.config import Settings
from gemcast.deploy import deploy_champion
from gemcast.registry import Registry
from gemcast.storage import open_storage

logger = Logger()
tracer = Tracer()
metrics = Metrics()

SETTINGS = Settings.from_env(
    required=("registry_uri", "endpoint_name", "serving_image_uri", "sagemaker_role_arn")
)
S3 = boto3.client("s3")
REGISTRY = Registry(SETTINGS.registry_uri, storage=open_storage(SETTINGS.registry_uri, client=S3))
SAGEMAKER = boto3.client("sagemaker")


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(log_event=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    result = deploy_champion(SAGEMAKER, REGISTRY, SETTINGS)
    logger.info("endpoint %s: %s", result.endpoint, result.action, extra=result.as_dict())
    rolled = result.action != "unchanged"
    metrics.add_metric(name="EndpointDeployments", unit=MetricUnit.Count, value=int(rolled))
    return result.as_dict()
