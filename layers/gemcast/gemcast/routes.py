"""Small pieces of the HTTP functions that are not the prediction itself.

``current_model`` answers GET /v1/models/current from the registry (the AWS and the GCP
function alike); ``record_request`` counts one API request in powertools Metrics: latency,
count and errors, by route and model version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from gemcast.errors import NotFoundError
from gemcast.registry import Registry

MODEL_VERSION_HEADER = "X-Model-Version"
# DynamoPredictionLog's failure kinds: "retry" is one failed put; "dlq" and "lost" are
# records DynamoDB never got (in the dead-letter queue, or only in the function's log).
LOG_FAILURE_METRICS = {
    "retry": "PredictionLogRetries",
    "dlq": "PredictionLogDeadLettered",
    "lost": "PredictionLogLost",
}


def log_failure_counter(metrics: Any) -> Callable[[str], None]:
    """An ``on_failure`` for DynamoPredictionLog that counts each failure in ``metrics``."""

    def count(kind: str) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        metrics.add_metric(
            name=LOG_FAILURE_METRICS.get(kind, "PredictionLogFailures"), unit=MetricUnit.Count, value=1
        )

    return count


def current_model(registry: Registry) -> dict[str, Any]:
    """The champion: version, held-out metrics, and the data snapshot it was trained on."""
    pointer = registry.champion()
    if pointer is None:
        raise NotFoundError("no model has been promoted yet: train and promote one first")
    version = str(pointer["version"])
    manifest = registry.manifest(version)
    data = manifest.get("data", {})
    return {
        "version": version,
        "promoted_at": pointer.get("promoted_at"),
        "promotion_reason": pointer.get("reason"),
        "created": manifest.get("created"),
        "kind": manifest.get("model", {}).get("kind"),
        "metrics": manifest.get("metrics", {}).get("holdout", {}),
        "trained_on": {
            "snapshot_id": data.get("snapshot_id"),
            "date": manifest.get("created"),
            "rows": data.get("rows"),
            "accepted": data.get("accepted"),
            "train_rows": data.get("train_rows"),
            "holdout_rows": data.get("holdout_rows"),
            "carat_range": data.get("carat_range"),
        },
    }


def current_card(registry: Registry) -> dict[str, Any]:
    """The champion's model card (Markdown) and its predicted-vs-actual plot (SVG text),
    both checked against the manifest's sha256 before they are served."""
    from gemcast.card import PLOT_FILE

    pointer = registry.champion()
    if pointer is None:
        raise NotFoundError("no model has been promoted yet: train and promote one first")
    version = str(pointer["version"])
    manifest = registry.manifest(version)
    return {
        "version": version,
        "markdown": registry.read_file(version, "model_card.md", manifest=manifest).decode(),
        "plot_svg": registry.read_file(version, PLOT_FILE, manifest=manifest).decode(),
    }


def header(response: Mapping[str, Any], name: str) -> str | None:
    """A header of a Lambda proxy response (``headers`` or ``multiValueHeaders``), any case."""
    wanted = name.lower()
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == wanted:
            return str(value)
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == wanted and values:
            return str(values[0])
    return None


def record_request(
    metrics: Any,
    event: Mapping[str, Any],
    response: Mapping[str, Any],
    started: float,
    *,
    now: float | None = None,
) -> None:
    """Count one request in ``metrics`` (powertools Metrics): Requests, LatencyMs, 4xx, 5xx.

    Dimensions: route (``"POST /v1/predictions"``, the API resource, never the raw path) and
    model_version (from the response's X-Model-Version header, "none" when no model answered).
    """
    from aws_lambda_powertools.metrics import MetricUnit

    status = int(response.get("statusCode") or 500)
    route = f"{event.get('httpMethod', '?')} {event.get('resource') or event.get('path', '?')}"
    metrics.add_dimension(name="route", value=route)
    metrics.add_dimension(name="model_version", value=header(response, MODEL_VERSION_HEADER) or "none")
    elapsed_ms = ((time.perf_counter() if now is None else now) - started) * 1000.0
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="LatencyMs", unit=MetricUnit.Milliseconds, value=round(elapsed_ms, 3))
    metrics.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=int(400 <= status < 500))
    metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=int(status >= 500))


def claims_sub(event: Mapping[str, Any]) -> str:
    """The caller: the ``sub`` claim the Cognito authorizer put in a REST proxy event ("" if none)."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    return str((authorizer.get("claims") or {}).get("sub") or "")


def proxy_log_record(
    event: Mapping[str, Any],
    response: Mapping[str, Any],
    started: float,
    *,
    ttl_days: int = 90,
    now: float | None = None,
) -> dict[str, Any]:
    """The prediction log record of a REST proxy request that is not a prediction (a query)."""
    import json

    from gemcast.api import log_record

    try:
        answer: Any = json.loads(response.get("body") or "null")
    except ValueError:
        answer = {"unparsed_body": response.get("body")}
    context = event.get("requestContext") or {}
    return log_record(
        request_id=str(context.get("requestId") or ""),
        caller=claims_sub(event),
        route=f"{event.get('httpMethod', '?')} {event.get('resource') or event.get('path', '?')}",
        request={"query": event.get("queryStringParameters") or {}, "body": event.get("body")},
        response=answer,
        status=int(response.get("statusCode") or 500),
        model_version=None,
        latency_ms=((time.perf_counter() if now is None else now) - started) * 1000.0,
        ttl_days=ttl_days,
    )
