"""API Gateway (REST, Cognito authorizer) -> prices, the model in service, the caller's history.

POST /v1/predictions goes through gemcast.api.handle_predictions (validate, call the
SageMaker endpoint, log every request and response); the other routes are read-only. The
caller is the ID token's ``sub`` claim, which the Cognito authorizer put in the event.
"""

import json
import time
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import UnauthorizedError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from gemcast.api import error_body, handle_predictions
from gemcast.aws import (
    DynamoPredictionLog,
    LazyClient,
    SageMakerEndpoint,
    endpoint_client_config,
    recent_for_caller,
)
from gemcast.config import Settings
from gemcast.errors import EndpointError, NotFoundError, ValidationError
from gemcast.openapi import document
from gemcast.registry import Registry
from gemcast.routes import MODEL_VERSION_HEADER, current_card, current_model, log_failure_counter, record_request

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()

# Clients once per container, at cold start.
SETTINGS = Settings.from_env(
    required=("endpoint_name", "registry_uri", "prediction_log_table", "log_dlq_url")
)
RUNTIME = boto3.client("sagemaker-runtime", config=endpoint_client_config(SETTINGS.endpoint_timeout_s))
ENDPOINT = SageMakerEndpoint(RUNTIME, SETTINGS.endpoint_name)
LOG_TABLE = boto3.resource("dynamodb").Table(SETTINGS.prediction_log_table)
REGISTRY = Registry(SETTINGS.registry_uri)
OPENAPI = document()
PREDICTION_LOG = DynamoPredictionLog(
    LOG_TABLE, LazyClient("sqs"), SETTINGS.log_dlq_url, on_failure=log_failure_counter(metrics)
)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response[str]:
    return Response(status, content_types.APPLICATION_JSON, json.dumps(body, default=str), headers or {})


def caller() -> str:
    claims = app.current_event.request_context.authorizer.claims or {}
    if not claims.get("sub"):
        raise UnauthorizedError("no signed-in user: send the Cognito ID token in the Authorization header")
    return str(claims["sub"])


@app.post("/v1/predictions")
@tracer.capture_method
def create_prediction() -> Response[str]:
    result = handle_predictions(
        app.current_event.decoded_body,
        request_id=app.current_event.request_context.request_id,
        caller=caller(),
        endpoint=ENDPOINT,
        log=PREDICTION_LOG,
        ttl_days=SETTINGS.log_ttl_days,
    )
    headers = {
        **result.headers,
        **({MODEL_VERSION_HEADER: result.model_version} if result.model_version else {}),
    }
    return json_response(result.status, result.body, headers)


@app.get("/v1/models/current")
@tracer.capture_method
def get_current_model() -> Response[str]:
    info = current_model(REGISTRY)
    return json_response(200, info, {MODEL_VERSION_HEADER: info["version"]})


@app.get("/v1/models/current/card")
@tracer.capture_method
def get_current_model_card() -> Response[str]:
    card = current_card(REGISTRY)
    return json_response(200, card, {MODEL_VERSION_HEADER: card["version"]})


@app.get("/v1/predictions/mine")
@tracer.capture_method
def list_my_predictions() -> dict[str, Any]:
    raw = app.current_event.get_query_string_value("limit", "20") or "20"
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 100:  # "²".isdigit() is True
        raise ValidationError(
            f"limit must be a whole number from 1 to 100, got {raw!r}", {"limit": "must be 1..100"}
        )
    records = recent_for_caller(LOG_TABLE, caller(), int(raw))
    return {"count": len(records), "predictions": records}


@app.get("/v1/openapi.json")
def get_openapi() -> dict[str, Any]:
    return OPENAPI


@app.get("/v1/health")
def get_health() -> dict[str, Any]:
    return {"status": "ok"}


@app.exception_handler(ValidationError)
def invalid_request(exc: ValidationError) -> Response[str]:
    return json_response(400, error_body(str(exc), exc.errors))


@app.exception_handler(NotFoundError)
def not_found(exc: NotFoundError) -> Response[str]:
    return json_response(404, error_body(str(exc)))


@app.exception_handler(EndpointError)
def endpoint_failed(exc: EndpointError) -> Response[str]:
    logger.error("model endpoint failed: %s", exc)
    return json_response(exc.status, error_body(exc.public_message))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = time.perf_counter()
    response = app.resolve(event, context)
    record_request(metrics, event, response, started)
    return response
