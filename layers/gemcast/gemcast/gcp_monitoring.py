"""Cloud Monitoring for gemcast on GCP: the drift metrics written, Vertex AI's metrics read.

- ``publish_drift``: the report's points (``gemcast.drift.metric_points``) as custom metrics
  ``custom.googleapis.com/gemcast/<name>`` on the ``global`` resource; gcp/monitoring/drift/
  alerts on ``drift_score`` exactly as template.yaml's DriftAlarm does on DriftScore.
- ``VertexMetrics``: a deployed model's prediction, error and p99 latency figures over a time
  span, for the Vertex AI canary (gemcast.vertex_deploy).
- ``incident``: the Cloud Monitoring incident in a Pub/Sub notification (the alert's way to
  the training trigger).

The client is google-cloud-monitoring's MetricServiceClient (gRPC). ``MONITORING_API_ENDPOINT``
names another endpoint; an ``http://host:port`` one is spoken to in plaintext with no
credentials (a local stand-in), as ``gemcast.gcp`` does for the Vertex AI client.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gemcast.drift import metric_points

CUSTOM_PREFIX = "custom.googleapis.com/gemcast/"
VERTEX_PREFIX = "aiplatform.googleapis.com/prediction/online/"


def metric_client(api_endpoint: str = "") -> Any:
    from google.api_core.client_options import ClientOptions
    from google.cloud.monitoring_v3.services.metric_service import MetricServiceClient

    if api_endpoint.startswith("http://"):
        import grpc
        from google.cloud.monitoring_v3.services.metric_service.transports.grpc import MetricServiceGrpcTransport

        channel = grpc.insecure_channel(api_endpoint.removeprefix("http://").rstrip("/"))
        return MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
    return MetricServiceClient(client_options=ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None)


def metric_type(name: str) -> str:
    """``DriftScore`` -> ``custom.googleapis.com/gemcast/drift_score``."""
    return CUSTOM_PREFIX + re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def publish_drift(client: Any, project: str, report: Mapping[str, Any], *, stage: str,
                  now: datetime | None = None) -> int:
    """Write the report's points (one CreateTimeSeries call); how many were written."""
    from google.cloud import monitoring_v3

    moment = (now or datetime.now(UTC)).timestamp()
    seconds = int(moment)
    series = []
    for name, labels, value in metric_points(report):
        one = monitoring_v3.TimeSeries()
        one.metric.type = metric_type(name)
        one.metric.labels.update({"stage": stage, **labels})
        one.resource.type = "global"
        one.resource.labels["project_id"] = project
        point = monitoring_v3.Point({"interval": {"end_time": {"seconds": seconds,
                                                               "nanos": int((moment - seconds) * 1e9)}},
                                     "value": {"double_value": float(value)}})
        one.points = [point]
        series.append(one)
    client.create_time_series(name=f"projects/{project}", time_series=series, timeout=30)
    return len(series)


@dataclass(frozen=True)
class ModelHealth:
    predictions: float
    errors: float
    p99_latency_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.predictions if self.predictions else 0.0


class VertexMetrics:
    """Vertex AI's online prediction metrics of one deployed model (resource
    ``aiplatform.googleapis.com/Endpoint``, label ``deployed_model_id``)."""

    def __init__(self, client: Any, project: str) -> None:
        self.client = client
        self.project = project

    def _series(self, metric: str, endpoint_id: str, deployed_model_id: str, start: datetime, end: datetime,
                aligner: str, span_s: int) -> list[float]:
        from google.cloud import monitoring_v3

        request = monitoring_v3.ListTimeSeriesRequest({
            "name": f"projects/{self.project}",
            "filter": (f'metric.type = "{VERTEX_PREFIX}{metric}" AND resource.labels.endpoint_id = "{endpoint_id}" '
                       f'AND metric.labels.deployed_model_id = "{deployed_model_id}"'),
            "interval": {"start_time": {"seconds": int(start.timestamp())},
                         "end_time": {"seconds": int(end.timestamp())}},
            "aggregation": {"alignment_period": {"seconds": max(60, span_s)}, "per_series_aligner": aligner},
            "view": monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        })
        values: list[float] = []
        for series in self.client.list_time_series(request=request, timeout=30):
            for point in series.points:
                value = point.value
                values.append(float(value.double_value or value.int64_value))
        return values

    def health(self, endpoint_id: str, deployed_model_id: str, start: datetime, end: datetime) -> ModelHealth:
        span = int((end - start).total_seconds())
        predictions = sum(self._series("prediction_count", endpoint_id, deployed_model_id, start, end,
                                       "ALIGN_SUM", span))
        errors = sum(self._series("error_count", endpoint_id, deployed_model_id, start, end, "ALIGN_SUM", span))
        latencies = self._series("prediction_latencies", endpoint_id, deployed_model_id, start, end,
                                 "ALIGN_PERCENTILE_99", span)
        return ModelHealth(predictions, errors, max(latencies) if latencies else None)


def incident(data: Any) -> dict[str, Any]:
    """The notification of a Pub/Sub notification channel: base64 JSON with ``incident``."""
    message = data.get("message", {}) if isinstance(data, Mapping) else {}
    raw = message.get("data", "") if isinstance(message, Mapping) else ""
    try:
        decoded = json.loads(base64.b64decode(raw)) if raw else {}
    except ValueError:
        decoded = {}
    return decoded if isinstance(decoded, dict) else {}
