"""Stand-ins for the two GCP services that have no emulator: Cloud Monitoring's MetricService
(gRPC) and Vertex AI's EndpointService and ModelService (REST), each in a thread on 127.0.0.1.

Both are small and keep to the documented shapes, so the real clients (google-cloud-monitoring,
google-cloud-aiplatform) talk to them unchanged:

- MetricService: ``CreateTimeSeries`` (one point a series, a time, a value) and
  ``ListTimeSeries`` with a filter of ``a = "b"`` terms joined by AND; the points are returned
  as stored: a test stores what an aligned query would give (a sum, a p99).
- Vertex AI: ``models:upload`` (with a model id; 409 when it exists), ``endpoints.get``,
  ``:deployModel`` (trafficSplit "0" = the model being deployed), ``:undeployModel`` (the
  remaining split must add to 100, as Vertex demands), ``endpoints.patch`` of trafficSplit;
  long-running operations are answered done.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from typing import Any

from gemcast_local.gcp_stack import HOST, _QuietHandler, _ThreadServer


# -- Cloud Monitoring ------------------------------------------------------------------------------
class MonitoringStandIn:
    def __init__(self) -> None:
        self.series: list[Any] = []
        self._server: Any = None
        self.url = ""

    def __enter__(self) -> MonitoringStandIn:
        import grpc
        from google.cloud import monitoring_v3
        from google.protobuf import empty_pb2

        def create(request: Any, context: Any) -> Any:
            for series in request.time_series:
                if len(series.points) != 1 or not series.metric.type:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "each time series needs a type and one point")
                self.series.append(series)
            return empty_pb2.Empty()

        def list_series(request: Any, context: Any) -> Any:
            terms = dict(re.findall(r'([\w.]+)\s*=\s*"([^"]*)"', request.filter))
            found = [s for s in self.series if all(_field(s, k) == v for k, v in terms.items())]
            return monitoring_v3.ListTimeSeriesResponse(time_series=found)

        handlers = {
            "CreateTimeSeries": grpc.unary_unary_rpc_method_handler(
                create, request_deserializer=monitoring_v3.CreateTimeSeriesRequest.deserialize,
                response_serializer=empty_pb2.Empty.SerializeToString),
            "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                list_series, request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
                response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize),
        }
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("google.monitoring.v3.MetricService", handlers),))
        port = self._server.add_insecure_port(f"{HOST}:0")
        self._server.start()
        self.url = f"http://{HOST}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)

    def add(self, metric_type: str, labels: dict[str, str], resource_labels: dict[str, str], value: float) -> None:
        """A point as Vertex AI would have written it (resource aiplatform.googleapis.com/Endpoint)."""
        from google.cloud import monitoring_v3

        series = monitoring_v3.TimeSeries({
            "metric": {"type": metric_type, "labels": labels},
            "resource": {"type": "aiplatform.googleapis.com/Endpoint", "labels": resource_labels},
            "points": [{"interval": {"end_time": {"seconds": int(datetime.now(UTC).timestamp())}},
                        "value": {"double_value": value}}],
        })
        self.series.append(series)

    def values(self, metric_type: str) -> dict[str, float]:
        """The stored points of a metric, by the metric's labels."""
        return {json.dumps(dict(s.metric.labels), sort_keys=True): s.points[0].value.double_value
                for s in self.series if s.metric.type == metric_type}


def _field(series: Any, path: str) -> str:
    if path == "metric.type":
        return str(series.metric.type)
    if path == "resource.type":
        return str(series.resource.type)
    kind, _, label = path.partition(".labels.")
    labels = series.metric.labels if kind == "metric" else series.resource.labels
    return str(labels.get(label, ""))


# -- Vertex AI -------------------------------------------------------------------------------------
class _VertexHandler(_QuietHandler):
    def _handle(self) -> None:
        stand_in: VertexStandIn = self.server.owner  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        path = self.path.split("?", 1)[0].removeprefix("/v1/")
        with stand_in.lock:
            stand_in.calls.append((self.command, path))
            status, answer = stand_in.route(self.command, path, body)
        self._send(status, answer)

    do_GET = do_POST = do_PATCH = _handle  # noqa: N815 - http.server's names


class VertexStandIn(_ThreadServer):
    """Endpoints and models of one project and region, in memory."""

    def __init__(self, project: str, region: str) -> None:
        super().__init__(_VertexHandler)
        self.parent = f"projects/{project}/locations/{region}"
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self._ids = itertools.count(1000)
        self.lock = threading.Lock()

    def add_endpoint(self, endpoint_id: str) -> str:
        name = f"{self.parent}/endpoints/{endpoint_id}"
        self.endpoints[name] = {"name": name, "displayName": endpoint_id, "deployedModels": [], "trafficSplit": {}}
        return name

    def __enter__(self) -> VertexStandIn:
        self.start()
        return self

    # -- the API --------------------------------------------------------------------------------
    def route(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if method == "POST" and path == f"{self.parent}/models:upload":
            return self._upload(body)
        name, _, verb = path.partition(":")
        if name in self.models and not verb:
            if method == "PATCH":  # updateMask=labels is all gemcast sends
                self.models[name]["labels"] = dict(body.get("labels") or {})
            return 200, self.models[name]
        if "/models/" in name:
            return _error(404, "NOT_FOUND", f"{name} not found")
        if name not in self.endpoints:
            return _error(404, "NOT_FOUND", f"{name} not found")
        endpoint = self.endpoints[name]
        if method == "GET" and not verb:
            return 200, endpoint
        if method == "PATCH" and not verb:
            return self._set_split(endpoint, body.get("trafficSplit") or {})
        if method == "POST" and verb == "deployModel":
            return self._deploy(endpoint, body)
        if method == "POST" and verb == "undeployModel":
            return self._undeploy(endpoint, body)
        return _error(400, "INVALID_ARGUMENT", f"{method} {path} is not served here")

    def _upload(self, body: dict[str, Any]) -> tuple[int, Any]:
        model_id = body.get("modelId") or str(next(self._ids))
        name = f"{self.parent}/models/{model_id}"
        if name in self.models:
            return _error(409, "ALREADY_EXISTS", f"Model {name} already exists")
        spec = body.get("model") or {}
        if not spec.get("containerSpec", {}).get("imageUri"):
            return _error(400, "INVALID_ARGUMENT", "model.container_spec.image_uri is required")
        self.models[name] = {**spec, "name": name}
        return 200, _done("UploadModelResponse", {"model": name})

    def _deploy(self, endpoint: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
        deployed = dict(body.get("deployedModel") or {})
        if deployed.get("model") not in self.models:
            return _error(404, "NOT_FOUND", f"model {deployed.get('model')} not found")
        deployed["id"] = str(next(self._ids))
        deployed["createTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        asked = body.get("trafficSplit") or {"0": 100}
        split = {(deployed["id"] if k == "0" else k): int(v) for k, v in asked.items()}
        endpoint["deployedModels"].append(deployed)
        status, answer = self._set_split(endpoint, split)
        if status != 200:
            endpoint["deployedModels"].pop()
            return status, answer
        return 200, _done("DeployModelResponse", {"deployedModel": deployed})

    def _undeploy(self, endpoint: dict[str, Any], body: dict[str, Any]) -> tuple[int, Any]:
        model_id = str(body.get("deployedModelId"))
        remaining = [d for d in endpoint["deployedModels"] if d["id"] != model_id]
        if len(remaining) == len(endpoint["deployedModels"]):
            return _error(404, "NOT_FOUND", f"deployed model {model_id} not found")
        split = {k: int(v) for k, v in (body.get("trafficSplit") or {}).items()}
        if not split:
            split = {k: v for k, v in endpoint["trafficSplit"].items() if k != model_id}
        if remaining and (sum(split.values()) != 100 or model_id in split):
            return _error(400, "INVALID_ARGUMENT", "the traffic split of the remaining models must add up to 100")
        endpoint["deployedModels"] = remaining
        endpoint["trafficSplit"] = split if remaining else {}
        return 200, _done("UndeployModelResponse", {})

    def _set_split(self, endpoint: dict[str, Any], split: dict[str, Any]) -> tuple[int, Any]:
        ids = {d["id"] for d in endpoint["deployedModels"]}
        split = {k: int(v) for k, v in split.items() if int(v) > 0 or k in ids}
        if set(split) - ids or sum(split.values()) != 100:
            return _error(400, "INVALID_ARGUMENT", f"traffic split {split} must name deployed models and add up "
                                                   "to 100")
        endpoint["trafficSplit"] = {k: v for k, v in split.items() if v > 0}
        return 200, endpoint

    def deployed(self, endpoint: str) -> Iterator[dict[str, Any]]:
        yield from self.endpoints[endpoint]["deployedModels"]


def _done(kind: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"name": f"operations/{kind}", "done": True,
            "response": {"@type": f"type.googleapis.com/google.cloud.aiplatform.v1.{kind}", **response}}


def _error(code: int, status: str, message: str) -> tuple[int, Any]:
    return code, {"error": {"code": code, "status": status, "message": message}}
