"""The model server of the serving image: one WSGI app for SageMaker and Vertex AI.

Routes (every predict route answers the stones of its request in order, each with its price or
its own error):

- ``GET /openapi.json``: this contract as OpenAPI (gemcast.serving_openapi).
- SageMaker container contract: ``GET /ping``, ``POST /invocations``, ``GET
  /execution-parameters`` (what Batch Transform asks a container for its strategy and payload
  size); port 8080 or ``SAGEMAKER_BIND_TO_PORT`` (see gemcast.container).
- SageMaker runtime wire path: ``POST /endpoints/{name}/invocations``, so a real boto3
  ``sagemaker-runtime`` client pointed here with ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` gets
  the container's answer (the local SageMaker-runtime stand-in in gemcast_local wraps a failing
  one as ModelError, as the real service does).
- Vertex AI container contract: ``AIP_HEALTH_ROUTE`` and ``AIP_PREDICT_ROUTE`` on
  ``AIP_HTTP_PORT``; and the Vertex AI REST path
  ``POST /v1/projects/{p}/locations/{l}/endpoints/{e}:predict``, so the real
  google-cloud-aiplatform client (REST transport) reaches it with ``api_endpoint`` set here. That
  path answers a refused request as Vertex does: ``{"error": {"code", "message", "status"}}``.

Content types, in and out (``Content-Type`` and ``Accept``; see ``CONTENT_TYPES``):
- ``application/json``: one stone, a list, or ``{"instances": [...], "parameters": {...}}``;
  answered ``{"predictions": [...], "model_version"}``.
- ``text/csv``: one stone a line, the 9 features in ``FEATURES`` order, with or without the
  header row (a header may name the columns in any order; other columns are ignored);
  answered one line a stone: ``price,error``.
- ``application/jsonlines``: one stone (an object or a list of 9 values) a line; answered one
  JSON object a line.
An Accept of none of them is 406 naming those served; no Accept (or ``*/*``) answers in the
type of the request. Parameters (``reasons``) come from ``parameters`` in JSON, or from the
query string or the ``X-Amzn-SageMaker-Custom-Attributes`` header (``reasons=false``) for any
type. CSV answers carry no reasons, so none are computed for them.

Bodies up to ``MAX_BODY_BYTES`` (6 MiB, SageMaker's request limit and Batch Transform's
default MaxPayloadInMB), chunked or not, with as many stones as fit.

The champion is loaded, sha256 verified, before the server accepts a connection: a model
that fails its check stops the start. gunicorn (gthread workers) serves it in production.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from gemcast.errors import GemcastError, ValidationError
from gemcast.predict import (
    Predictor,
    PriceOptions,
    Unreadable,
    csv_header,
    csv_stone,
    options_from_text,
    parse_options,
    parse_request,
)
from gemcast.schema import Problem, as_finite

logger = logging.getLogger("gemcast.serve")

MAX_BODY_BYTES = 6 * 1024 * 1024
JSON, CSV, JSONL = "application/json", "text/csv", "application/jsonlines"
CONTENT_TYPES = (JSON, CSV, JSONL)
_ALIASES = {"application/jsonl": JSONL, "application/x-jsonlines": JSONL, "application/x-ndjson": JSONL,
            "text/plain": CSV}
_RUNTIME_PATH = re.compile(r"^/endpoints/[^/]+/invocations$")
_VERTEX_PATH = re.compile(r"^/v1/projects/[^/]+/locations/[^/]+/endpoints/[^/:]+:(raw)?[pP]redict$")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
            413: "Payload Too Large", 415: "Unsupported Media Type", 503: "Service Unavailable"}
# google.rpc.Code names of the HTTP statuses the Vertex path answers with (google/rpc/code.proto).
_RPC_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 406: "INVALID_ARGUMENT",
               413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT", 503: "UNAVAILABLE"}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class RequestError(GemcastError):
    """A request refused as a whole, with its HTTP status; turned into an answer in ``_refuse``."""

    def __init__(self, status: int, message: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields or {}


def media_type(header: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; aliases to the type served."""
    value = (header or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(value, value)


def choose_accept(header: str | None, default: str) -> str:
    """The answer's type for an Accept header: the served type of highest q, or 406."""
    if not header or not header.strip():
        return default
    offers: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        kind, *params = part.split(";")
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                q = as_finite(value) or 0.0
        kind = media_type(kind)
        if q <= 0:
            continue
        if kind in {"*/*", "application/*"}:
            kind = default if kind == "*/*" or default != CSV else JSON
        elif kind == "text/*":
            kind = CSV
        if kind in CONTENT_TYPES:
            offers.append((-q, i, kind))
    if not offers:
        raise RequestError(406, f"cannot answer in {header!r}: this model serves {', '.join(CONTENT_TYPES)}",
                           {"Accept": f"must be one of {', '.join(CONTENT_TYPES)}"})
    return min(offers)[2]


# ----------------------------------------------------------------------------- reading bodies


def _csv_stones(text: str) -> list[Any]:
    """The stones of a ``text/csv`` body: one a line, features in order or named by a header."""
    from gemcast.cleaning import csv_lines

    stones: list[Any] = []
    header: list[str] | None = None
    first = True
    for cells, unreadable in csv_lines(text):
        if unreadable is None and not cells:
            continue  # a blank line is not a stone (Batch Transform may end a batch with one)
        if first:
            first = False
            header = csv_header(cells) if unreadable is None else None
            if header is not None:
                continue
        stones.append(Unreadable(unreadable) if unreadable is not None else csv_stone(cells, header))
    if not stones:
        raise ValidationError("no stones to price", {"body": "must hold at least one CSV line"})
    return stones


def _jsonl_stones(text: str) -> list[Any]:
    stones: list[Any] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            stones.append(json.loads(line))
        except ValueError as exc:
            stones.append(Unreadable(Problem("line", f"is not JSON: {exc}")))
    if not stones:
        raise ValidationError("no stones to price", {"body": "must hold at least one JSON line"})
    return stones


def _read_body(environ: dict[str, Any]) -> bytes:
    """The body, chunked or with a Content-Length, refused past MAX_BODY_BYTES."""
    raw_length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if raw_length.strip():
        if not raw_length.strip().isdigit():
            raise RequestError(400, f"Content-Length {raw_length!r} is not a size",
                               {"Content-Length": "must be a whole number"})
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            raise RequestError(413, f"body of {length} bytes is over {MAX_BODY_BYTES} bytes",
                               {"body": f"must be at most {MAX_BODY_BYTES} bytes"})
        return bytes(stream.read(length)) if length else b""
    data = bytes(stream.read(MAX_BODY_BYTES + 1))  # chunked: read to its end, or past the limit
    if len(data) > MAX_BODY_BYTES:
        raise RequestError(413, f"body over {MAX_BODY_BYTES} bytes",
                           {"body": f"must be at most {MAX_BODY_BYTES} bytes"})
    return data


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"the body is not UTF-8 text: {exc}", {"body": "must be UTF-8"}) from exc


def read_request(environ: dict[str, Any]) -> tuple[list[Any], PriceOptions, str]:
    """(stones, options, the request's media type) from a predict request."""
    kind = media_type(environ.get("CONTENT_TYPE")) or JSON
    if kind not in CONTENT_TYPES:
        raise RequestError(415, f"cannot read {kind!r}: this model reads {', '.join(CONTENT_TYPES)}",
                           {"Content-Type": f"must be one of {', '.join(CONTENT_TYPES)}"})
    raw = _read_body(environ)
    text_params = {
        **options_from_text(environ.get("HTTP_X_AMZN_SAGEMAKER_CUSTOM_ATTRIBUTES"),
                            where="X-Amzn-SageMaker-Custom-Attributes"),
        # "$alt=json;enum-encoding=int" and the like are the Google REST transport's own.
        **{k: v for k, v in urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
           if not k.startswith("$")},
    }
    if kind == JSON:
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValidationError(f"the body is not JSON: {exc}", {"body": "must be JSON"}) from exc
        stones, _single, options = parse_request(body, max_stones=None)
        if text_params:
            options = parse_options(text_params, where="query")
        return stones, options, kind
    text = _decode(raw)
    stones = _csv_stones(text) if kind == CSV else _jsonl_stones(text)
    return stones, parse_options(text_params or None, where="query"), kind


# ----------------------------------------------------------------------------- writing answers


def render(kind: str, predictions: list[dict[str, Any]], version: str, extra: dict[str, Any] | None = None) -> bytes:
    """The answer body in ``kind``: one entry a stone, in the order of the request."""
    if kind == CSV:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for p in predictions:
            writer.writerow([p["price"], ""] if "price" in p else ["", p["error"]["message"]])
        return out.getvalue().encode()
    if kind == JSONL:
        return "".join(json.dumps(p, separators=(",", ":")) + "\n" for p in predictions).encode()
    payload = {"predictions": predictions, "model_version": version, **(extra or {})}
    return json.dumps(payload, separators=(",", ":")).encode()


class ModelApp:
    """A WSGI application around one loaded model."""

    def __init__(self, predictor: Predictor, *, health_route: str | None = None,
                 predict_route: str | None = None, workers: int = 1) -> None:
        self.predictor = predictor
        self.health_routes = {"/ping", health_route or os.environ.get("AIP_HEALTH_ROUTE", "/ping")}
        self.predict_routes = {"/invocations", predict_route or os.environ.get("AIP_PREDICT_ROUTE", "/invocations")}
        self.workers = workers
        self.ready = True

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        vertex = bool(_VERTEX_PATH.match(path))
        try:
            if path in self.health_routes and method in {"GET", "HEAD"}:
                if not self.ready:
                    return self._send(start_response, 503, JSON, json.dumps({"status": "loading"}).encode())
                return self._json(start_response, 200, {"status": "healthy", "model_version": self.predictor.version})
            if path == "/execution-parameters" and method == "GET":
                return self._json(start_response, 200, self.execution_parameters())
            if path == "/openapi.json" and method == "GET":
                from gemcast.serving_openapi import document

                return self._json(start_response, 200, document())
            if path in self.predict_routes or _RUNTIME_PATH.match(path) or vertex:
                if method != "POST":
                    raise RequestError(405, f"{path} takes POST")
                return self._predict(environ, start_response, vertex=vertex)
            raise RequestError(404, f"no route {method} {path}")
        except ValidationError as exc:
            fields = exc.errors if isinstance(exc.errors, dict) else {"body": exc.errors}
            return self._refuse(start_response, RequestError(400, str(exc), fields), vertex=vertex)
        except RequestError as exc:
            return self._refuse(start_response, exc, vertex=vertex)

    def execution_parameters(self) -> dict[str, Any]:
        """Batch Transform's GET /execution-parameters: many stones a request, one per worker."""
        return {"MaxConcurrentTransforms": self.workers, "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": MAX_BODY_BYTES // (1024 * 1024)}

    def _predict(self, environ: dict[str, Any], start_response: StartResponse, *, vertex: bool) -> Iterable[bytes]:
        started = time.perf_counter()
        stones, options, kind = read_request(environ)
        answer = choose_accept(environ.get("HTTP_ACCEPT"), kind)
        predictions = self.predictor.price(stones, options, reasons=False if answer == CSV else None)
        version = self.predictor.version
        extra = {"deployedModelId": version, "modelVersionId": version} if vertex else None
        data = render(answer, predictions, version, extra)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return self._send(start_response, 200, answer, data,
                          [("X-Model-Version", version), ("X-Inference-Ms", f"{elapsed_ms:.3f}")])

    def _refuse(self, start_response: StartResponse, exc: RequestError, *, vertex: bool) -> list[bytes]:
        """The one place a refused request becomes an answer: ours, or Vertex's google.rpc.Status."""
        if vertex:
            error: dict[str, Any] = {"code": exc.status, "message": str(exc),
                                     "status": _RPC_STATUS.get(exc.status, "UNKNOWN")}
        else:
            error = {"message": str(exc), **({"fields": exc.fields} if exc.fields else {})}
        return self._json(start_response, exc.status, {"error": error})

    def _json(self, start_response: StartResponse, status: int, payload: Any) -> list[bytes]:
        return self._send(start_response, status, JSON, json.dumps(payload, separators=(",", ":")).encode())

    @staticmethod
    def _send(start_response: StartResponse, status: int, kind: str, data: bytes,
              headers: list[tuple[str, str]] | None = None) -> list[bytes]:
        start_response(f"{status} {_REASONS.get(status, 'Error')}",
                       [("Content-Type", kind), ("Content-Length", str(len(data))), *(headers or [])])
        return [data]


def load_app(registry_uri: str, version: str | None = None, *, workers: int = 1) -> ModelApp:
    """Load and verify the champion (or ``version``) of ``registry_uri``; wrap it in the WSGI app."""
    from gemcast.registry import Registry

    registry = Registry(registry_uri)
    loaded = registry.load(version) if version else registry.load_champion()
    # Pay the one-off costs (the onnxruntime graph and its exactness check, the compiled walk
    # for a few stones, the explanation tables) before the first request, and before gunicorn
    # forks, so workers share them.
    loaded.model.fast_predictor()
    loaded.model.compiled_walk()
    _ = loaded.model.base_log
    logger.info("serving model %s from %s", loaded.version, registry_uri)
    return ModelApp(Predictor(loaded.model, loaded.version), workers=workers)


def _worker_exit(_server: Any, worker: Any) -> None:
    """A worker that served ends without running C++ static destructors.

    onnxruntime's objects were built before the fork; their destructors throw in the child
    (std::system_error) and abort it, so every graceful stop logged SIGABRT. The worker has
    finished its requests when gunicorn calls this, so nothing is lost by leaving at once.
    """
    if getattr(worker, "booted", False) and getattr(worker, "pid", None) == os.getpid():  # not in the master
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        logging.shutdown()
        os._exit(0)


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

    n_workers = workers or max(2, os.cpu_count() or 2)
    try:
        app = load_app(registry_uri, version, workers=n_workers)
    except GemcastError as exc:
        logger.error("refusing to start: %s", exc)
        raise

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", n_workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 4)
            self.cfg.set("keepalive", 75)
            self.cfg.set("timeout", 60)
            self.cfg.set("graceful_timeout", 20)
            self.cfg.set("accesslog", None)
            self.cfg.set("loglevel", "warning")
            self.cfg.set("worker_exit", _worker_exit)

        def load(self) -> ModelApp:
            return app

    _Server().run()
    return 0
