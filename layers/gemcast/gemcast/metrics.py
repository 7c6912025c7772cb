"""Request metrics of the AWS API functions, in powertools Metrics (EMF on CloudWatch).

``record_request`` counts one API request: latency, count and errors, by route and model
version; ``log_failure_counter`` counts the prediction log's failed writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from gemcast.api import MODEL_VERSION_HEADER

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
