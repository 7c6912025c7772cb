"""The model server of the serving image: one WSGI app for SageMaker and Vertex AI.

Routes (every predict route takes ``{"instances": [stone, ...]}`` — or one stone, or a list —
and answers ``{"predictions": [{"price", "base_price", "reasons"} | {"error"}, ...]}`` in order):

- SageMaker container contract: ``GET /ping``, ``POST /invocations`` (port 8080).
- SageMaker runtime wire path: ``POST /endpoints/{name}/invocations``, so a real boto3
  ``sagemaker-runtime`` client pointed here with ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` gets
  the same answer as from the cloud.
- Vertex AI container contract: ``AIP_HEALTH_ROUTE`` and ``AIP_PREDICT_ROUTE`` on
  ``AIP_HTTP_PORT``; and the Vertex AI REST path
  ``POST /v1/projects/{p}/locations/{l}/endpoints/{e}:predict``, so the real
  google-cloud-aiplatform client (REST transport) reaches it with ``api_endpoint`` set here.

The champion is loaded, sha256 verified, before the server accepts a connection: a model
that fails its check stops the start. gunicorn (gthread workers) serves it in production.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from gemcast.answer import parse_parameters
from gemcast.errors import GemcastError, ValidationError
from gemcast.predict import Predictor, parse_instances

logger = logging.getLogger("gemcast.serve")

MAX_BODY_BYTES = 4 * 1024 * 1024
_RUNTIME_PATH = re.compile(r"^/endpoints/[^/]+/invocations$")
_VERTEX_PATH = re.compile(r"^/v1/projects/[^/]+/locations/[^/]+/endpoints/[^/:]+:(raw)?[pP]redict$")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class ModelApp:
    """A WSGI application around one loaded model."""

    def __init__(self, predictor: Predictor, *, health_route: str | None = None,
                 predict_route: str | None = None) -> None:
        self.predictor = predictor
        self.health_routes = {"/ping", health_route or os.environ.get("AIP_HEALTH_ROUTE", "/ping")}
        self.predict_routes = {"/invocations", predict_route or os.environ.get("AIP_PREDICT_ROUTE", "/invocations")}
        self.ready = True

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        if path in self.health_routes and method in {"GET", "HEAD"}:
            if not self.ready:
                return self._json(start_response, 503, {"status": "loading"})
            return self._json(start_response, 200, {"status": "healthy", "model_version": self.predictor.version})
        if path in self.predict_routes or _RUNTIME_PATH.match(path) or _VERTEX_PATH.match(path):
            if method != "POST":
                return self._json(start_response, 405, {"error": {"message": f"{path} takes POST"}})
            return self._predict(environ, start_response, vertex=bool(_VERTEX_PATH.match(path)))
        return self._json(start_response, 404, {"error": {"message": f"no route {method} {path}"}})

    def _predict(self, environ: dict[str, Any], start_response: StartResponse, *, vertex: bool) -> Iterable[bytes]:
        started = time.perf_counter()
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            return self._json(start_response, 413, {"error": {"message": f"body over {MAX_BODY_BYTES} bytes"}})
        raw = environ["wsgi.input"].read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            return self._json(start_response, 400, {"error": {"message": f"the body is not JSON: {exc}",
                                                              "fields": {"body": "must be JSON"}}})
        try:
            stones, _single = parse_instances(body)
            predictions = self.predictor.price(stones, **parse_parameters(body))
        except ValidationError as exc:
            return self._json(start_response, 400, {"error": {"message": str(exc), "fields": exc.errors}})
        payload: dict[str, Any] = {"predictions": predictions, "model_version": self.predictor.version}
        if vertex:
            payload["deployedModelId"] = self.predictor.version
            payload["modelVersionId"] = self.predictor.version
        elapsed_ms = (time.perf_counter() - started) * 1000
        return self._json(start_response, 200, payload, [("X-Model-Version", self.predictor.version),
                                                         ("X-Inference-Ms", f"{elapsed_ms:.3f}")])

    @staticmethod
    def _json(start_response: StartResponse, status: int, payload: Any,
              headers: list[tuple[str, str]] | None = None) -> list[bytes]:
        data = json.dumps(payload, separators=(",", ":")).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  413: "Payload Too Large", 503: "Service Unavailable"}.get(status, "Error")
        start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(data))), *(headers or [])])
        return [data]


def load_app(registry_uri: str, version: str | None = None) -> ModelApp:
    """Load and verify the champion (or ``version``) of ``registry_uri``; wrap it in the WSGI app."""
    from gemcast.registry import Registry

    registry = Registry(registry_uri)
    loaded = registry.load(version) if version else registry.load_champion()
    # Pay the one-off costs (the onnxruntime graph and its exactness check, the explanation
    # tables) before the first request, and before gunicorn forks, so workers share them.
    loaded.model.fast_predictor()
    _ = loaded.model.base_log
    logger.info("serving model %s from %s", loaded.version, registry_uri)
    return ModelApp(Predictor(loaded.model, loaded.version))


def run_server(
    registry_uri: str,
    *,
    version: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int | None = None,
) -> int:
    """Run the app under gunicorn; the model is loaded (and checked) before forking workers."""
    # One BLAS/OpenMP thread a worker: several workers on few cores otherwise starve each other.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from gunicorn.app.base import BaseApplication

    try:
        app = load_app(registry_uri, version)
    except GemcastError as exc:
        logger.error("refusing to start: %s", exc)
        raise

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers or max(2, os.cpu_count() or 2))
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 4)
            self.cfg.set("keepalive", 75)
            self.cfg.set("timeout", 60)
            self.cfg.set("accesslog", None)
            self.cfg.set("loglevel", "warning")

        def load(self) -> ModelApp:
            return app

    _Server().run()
    return 0
