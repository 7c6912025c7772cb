"""API Gateway (REST, Cognito authorizer) -> prices, the models, the caller's history, the document.

The routes are those gemcast.routes gives this Lambda; each runs through gemcast.api.respond
(validate, call the SageMaker endpoint, log every prediction). The caller is the ID token's
``sub`` claim, which the Cognito authorizer put in the event.
"""

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from gemcast.api import StaticDeps
from gemcast.aws import (
    DynamoPredictionLog,
    LazyClient,
    SageMakerEndpoint,
    endpoint_client_config,
    log_client_config,
    recent_for_caller,
)
from gemcast.config import Settings
from gemcast.lambda_api import register_routes, serve
from gemcast.metrics import log_failure_counter
from gemcast.registry import Registry
from gemcast.storage import open_storage

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()

# Clients once per container, at cold start.
SETTINGS = Settings.from_env(
    required=("endpoint_name", "registry_uri", "prediction_log_table", "log_dlq_url")
)
RUNTIME = boto3.client("sagemaker-runtime", config=endpoint_client_config(SETTINGS.endpoint_timeout_s))
LOG_TABLE = boto3.resource("dynamodb", config=log_client_config()).Table(SETTINGS.prediction_log_table)
# Records over the table's item limit are kept whole under the bucket's log prefix.
LOG_BUCKET = open_storage(SETTINGS.prediction_log_uri, LazyClient("s3", config=log_client_config())) \
    if SETTINGS.prediction_log_uri else None
DEPS = StaticDeps(
    endpoint=SageMakerEndpoint(RUNTIME, SETTINGS.endpoint_name),
    log=DynamoPredictionLog(LOG_TABLE, LazyClient("sqs", config=log_client_config()), SETTINGS.log_dlq_url,
                            overflow=LOG_BUCKET, on_failure=log_failure_counter(metrics)),
    registry=Registry(SETTINGS.registry_uri),
    history=lambda caller, limit: recent_for_caller(LOG_TABLE, caller, limit, LOG_BUCKET),
    ttl_days=SETTINGS.log_ttl_days,
)
register_routes(app, "predict_proxy", DEPS, wrap=tracer.capture_method)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, metrics, event, context)
