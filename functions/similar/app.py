"""API Gateway (REST, Cognito authorizer) -> GET /v1/diamonds/similar.

The n stones of the data with the same cut, color and clarity and the nearest carat, from the
inventory table: two key-condition queries around the carat, never a scan. Every query and
its answer go to the prediction log, like predictions (a failed write goes to the DLQ).
"""

import json
import time
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from gemcast.api import error_body
from gemcast.aws import DynamoPredictionLog, LazyClient
from gemcast.config import Settings
from gemcast.errors import ValidationError
from gemcast.inventory import DynamoInventory, parse_query, similar_response
from gemcast.routes import log_failure_counter, proxy_log_record, record_request

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()

SETTINGS = Settings.from_env(required=("inventory_table", "prediction_log_table", "log_dlq_url"))
DYNAMODB = boto3.resource("dynamodb")
INVENTORY = DynamoInventory(SETTINGS.inventory_table, resource=DYNAMODB)


REQUEST_LOG = DynamoPredictionLog(
    DYNAMODB.Table(SETTINGS.prediction_log_table),
    LazyClient("sqs"),
    SETTINGS.log_dlq_url,
    on_failure=log_failure_counter(metrics),
)


@app.get("/v1/diamonds/similar")
@tracer.capture_method
def list_similar() -> dict[str, Any]:
    carat, cut, color, clarity, n = parse_query(app.current_event.query_string_parameters)
    stones = INVENTORY.similar(carat, cut, color, clarity, n)
    return similar_response(carat, cut, color, clarity, n, stones)


@app.exception_handler(ValidationError)
def invalid_query(exc: ValidationError) -> Response[str]:
    return Response(400, content_types.APPLICATION_JSON, json.dumps(error_body(str(exc), exc.errors)))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = time.perf_counter()
    response = app.resolve(event, context)
    REQUEST_LOG.write(proxy_log_record(event, response, started, ttl_days=SETTINGS.log_ttl_days))
    record_request(metrics, event, response, started)
    return response
