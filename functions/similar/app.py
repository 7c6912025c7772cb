"""API Gateway (REST, Cognito authorizer) -> GET /v1/diamonds/similar.

The n stones of the data with the same cut, color and clarity and the nearest carat, from the
inventory table: two key-condition queries around the carat, never a scan. The route comes
from gemcast.routes; gemcast.api.respond answers it and logs every query and its answer to the
prediction log, like predictions (a failed write goes to the DLQ).
"""

from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from gemcast.api import StaticDeps
from gemcast.aws import DynamoPredictionLog, LazyClient, log_client_config
from gemcast.config import Settings
from gemcast.inventory import DynamoInventory
from gemcast.lambda_api import register_routes, serve
from gemcast.metrics import log_failure_counter

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()

SETTINGS = Settings.from_env(required=("inventory_table", "prediction_log_table", "log_dlq_url"))
DYNAMODB = boto3.resource("dynamodb")
# The log's own clients time out fast: a slow table must not hold the answer for minutes.
LOG_DYNAMODB = boto3.resource("dynamodb", config=log_client_config())
DEPS = StaticDeps(
    inventory=DynamoInventory(SETTINGS.inventory_table, resource=DYNAMODB),
    log=DynamoPredictionLog(LOG_DYNAMODB.Table(SETTINGS.prediction_log_table),
                            LazyClient("sqs", config=log_client_config()), SETTINGS.log_dlq_url,
                            on_failure=log_failure_counter(metrics)),
    ttl_days=SETTINGS.log_ttl_days,
)
register_routes(app, "similar", DEPS, wrap=tracer.capture_method)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return serve(app, metrics, event, context)
