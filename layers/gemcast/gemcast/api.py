"""The gemcast API, cloud-neutral: the function of every route, and the one place that turns
errors into answers and writes the prediction log.

The route table (``gemcast.routes``) names, for each route, one function here taking an
``ApiRequest`` (method, path, query, body, the caller's subject, the request id) and the
dependencies (``ApiDeps``: endpoint client, prediction log, registry, inventory, the caller's
history) and giving an ``ApiResponse``. ``respond`` runs a route: it refuses an anonymous
caller where the route needs one (401, as API Gateway's Cognito authorizer answers), turns
``ValidationError`` into 400, ``NotFoundError`` into 404 and ``EndpointError`` into 502/503 (with
Retry-After), and logs every call of a logged route whatever its status. The AWS Lambdas
(behind API Gateway), the GCP ``api`` function and the local stack all call it, so the answers,
errors, status codes and headers are the same everywhere.

Answers of POST /v1/predictions:
- one stone: ``{"request_id", "model_version", "price", "base_price", "reasons"}``
- a list (or ``{"instances": [...]}``): ``{"request_id", "model_version", "predictions": [...]}``
  where each entry is a priced stone or ``{"error": {"message", "fields"}}``
- 400 ``{"error": {"message", "fields"}, "request_id"}`` when the body is unusable, a single
  stone is invalid, or every stone of a list is invalid
- 502 when the endpoint answered wrongly, 503 when it could not be reached or timed out, or
  when the price could not be recorded anywhere durable.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from gemcast.errors import EndpointError, GemcastError, NotFoundError, ValidationError
from gemcast.predict import ENVELOPE_KEYS, parse_instances, parse_options, validate_stones

if TYPE_CHECKING:
    from gemcast.registry import Registry
    from gemcast.routes import Route

logger = logging.getLogger(__name__)

MODEL_VERSION_HEADER = "X-Model-Version"
RETRY_AFTER_S = "5"


class EndpointClient(Protocol):
    def invoke(self, instances: list[dict[str, Any]], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """``{"predictions": [...], "model_version": ...}``; raises EndpointError."""
        ...


class PredictionLog(Protocol):
    def write(self, record: dict[str, Any]) -> bool:
        """Store one record (table, bucket or dead-letter queue); never raises. False when it
        could be stored nowhere durable (only in the function's log)."""
        ...


class Inventory(Protocol):
    def similar(self, carat: float, cut: str, color: str, clarity: str, n: int) -> list[dict[str, Any]]: ...


class ApiDeps(Protocol):
    """What the route functions use; each doorway gives its own (created once per instance).
    A doorway that serves only some routes may leave the others' dependencies None."""

    @property
    def endpoint(self) -> EndpointClient | None: ...
    @property
    def log(self) -> PredictionLog | None: ...
    @property
    def registry(self) -> Registry | None: ...
    @property
    def inventory(self) -> Inventory | None: ...
    @property
    def history(self) -> Callable[[str, int], list[dict[str, Any]]] | None:
        """``history(caller, limit)``: the caller's own log records, newest first."""
        ...
    @property
    def ttl_days(self) -> int: ...


@dataclass
class StaticDeps:
    """ApiDeps from values created beforehand (the Lambdas create their clients at cold start)."""

    endpoint: EndpointClient | None = None
    log: PredictionLog | None = None
    registry: Registry | None = None
    inventory: Inventory | None = None
    history: Callable[[str, int], list[dict[str, Any]]] | None = None
    ttl_days: int = 90


@dataclass(frozen=True)
class ApiRequest:
    """One API call as every doorway hands it over: ``caller`` is the verified token's
    subject ("" when the call carried no valid token)."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    body: str | bytes | None = None
    caller: str = ""
    request_id: str = ""


@dataclass
class ApiResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    model_version: str | None = None

    def all_headers(self) -> dict[str, str]:
        """The headers on the wire: the model version of the answer, when a model answered."""
        version = {MODEL_VERSION_HEADER: self.model_version} if self.model_version else {}
        return {"Content-Type": "application/json", **self.headers, **version}


class MissingDependencyError(GemcastError):
    """A route ran on a doorway that was not given what the route needs (a deployment fault)."""


UNAUTHORIZED_MESSAGE = "Unauthorized: send a valid ID token of this API in the Authorization header"
UNAUTHORIZED_FIELDS = {"Authorization": "missing, expired or not an ID token of this API"}


def unauthorized(request_id: str = "") -> ApiResponse:
    """A refused token, as API Gateway's UNAUTHORIZED gateway response in template.yaml answers
    it (tests/unit/test_api.py holds the two equal); the reason stays in the log."""
    return ApiResponse(401, {**error_body(UNAUTHORIZED_MESSAGE, UNAUTHORIZED_FIELDS), "request_id": request_id},
                       {"WWW-Authenticate": "Bearer"})


def error_body(message: str, fields: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message}
    if fields:
        error["fields"] = fields
    return {"error": error}


def log_record(
    *,
    request_id: str,
    caller: str,
    route: str,
    request: Any,
    response: Any,
    status: int,
    model_version: str | None,
    latency_ms: float,
    ttl_days: int = 90,
    now: float | None = None,
) -> dict[str, Any]:
    """The prediction log record of ARCHITECTURE.md (caller is the token's subject)."""
    moment = time.time() if now is None else now
    return {
        "request_id": request_id,
        "created_at": datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "caller": caller or "anonymous",
        "route": route,
        "request": request,
        "response": response,
        "status": int(status),
        "model_version": model_version or "",
        "latency_ms": round(float(latency_ms), 3),
        "expires_at": int(moment + ttl_days * 86400),
    }


# A DynamoDB item holds at most 400 KB and a Firestore document 1 MiB; bigger request or
# response documents are stored compressed (zlib, base64) so a 1,000-stone batch is still
# logged whole.
INLINE_LIMIT = 64 * 1024


def pack_documents(record: Mapping[str, Any]) -> dict[str, Any]:
    """A log record for a table: request and response as JSON text, ``<key>_gz`` when large."""
    out = {k: v for k, v in record.items() if k not in {"request", "response"}}
    for key in ("request", "response"):
        text = json.dumps(record.get(key), separators=(",", ":"), default=str)
        if len(text) > INLINE_LIMIT:
            out[f"{key}_gz"] = base64.b64encode(zlib.compress(text.encode(), 6)).decode()
        else:
            out[key] = text
    return out


def unpack_documents(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``pack_documents``."""
    out = dict(stored)
    for key in ("request", "response"):
        if f"{key}_gz" in out:
            out[key] = json.loads(zlib.decompress(base64.b64decode(out.pop(f"{key}_gz"))))
        elif isinstance(out.get(key), str):
            out[key] = json.loads(out[key])
    return out


def _parse_body(body: str | bytes | None) -> Any:
    if body is None or (isinstance(body, str | bytes) and not body.strip()):
        raise ValidationError("the request has no body: send a stone or a list of stones as JSON",
                              {"body": "is missing"})
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}", {"body": "must be JSON"}) from exc


def price_stones(body: str | bytes | None, endpoint: EndpointClient) -> ApiResponse:
    """Validate and price; no logging (see ``handle_predictions``)."""
    try:
        parsed = _parse_body(body)
        # Passed on to the model server when given (coverage, what_if, reasons), also beside a
        # single stone's fields; refused here, naming the field, before the endpoint is called.
        parameters = parsed.get("parameters") if isinstance(parsed, Mapping) else None
        parse_options(parameters)
        if parameters is not None and not any(k in parsed for k in ENVELOPE_KEYS):
            parsed = {k: v for k, v in parsed.items() if k != "parameters"}
        raw_stones, single = parse_instances(parsed)
    except ValidationError as exc:
        return ApiResponse(400, error_body(str(exc), exc.errors))
    errors, valid = validate_stones(raw_stones)
    if single and errors[0] is not None:
        return ApiResponse(400, {"error": errors[0]})
    if not valid:
        return ApiResponse(400, {
            "error": {"message": f"all {len(raw_stones)} stones are invalid", "fields": {}},
            "predictions": [{"error": e} for e in errors],
        })
    answer = endpoint.invoke(valid, parameters) if parameters else endpoint.invoke(valid)
    priced = answer.get("predictions")
    if not isinstance(priced, list) or len(priced) != len(valid):
        raise EndpointError("the model endpoint answered with the wrong number of predictions", status=502)
    version = str(answer.get("model_version") or "")
    results: list[dict[str, Any]] = []
    it = iter(priced)
    for err in errors:
        results.append({"error": err} if err is not None else next(it))
    body_out: dict[str, Any] = {"model_version": version}
    if single:
        body_out.update(results[0])
    else:
        body_out["predictions"] = results
    return ApiResponse(200, body_out, model_version=version)


def _need(value: Any, what: str) -> Any:
    if value is None:
        raise MissingDependencyError(f"this doorway has no {what}: the route table sends it a route it cannot serve")
    return value


# -- the route functions (named in gemcast.routes) ------------------------------------------------
def create_prediction(request: ApiRequest, deps: ApiDeps) -> ApiResponse:
    return price_stones(request.body, _need(deps.endpoint, "model endpoint"))


def list_my_predictions(request: ApiRequest, deps: ApiDeps) -> ApiResponse:
    raw = str(request.query.get("limit") or "20")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 100:  # "²".isdigit() is True
        raise ValidationError(f"limit must be a whole number from 1 to 100, got {raw!r}", {"limit": "must be 1..100"})
    records = _need(deps.history, "prediction log reader")(request.caller, int(raw))
    return ApiResponse(200, {"count": len(records), "predictions": records})


def list_models(request: ApiRequest, deps: ApiDeps) -> ApiResponse:
    from gemcast.models_info import model_history

    return ApiResponse(200, model_history(_need(deps.registry, "model registry")))


def get_current_model(request: ApiRequest, deps: ApiDeps) -> ApiResponse:
    from gemcast.models_info import current_model

    info = current_model(_need(deps.registry, "model registry"))
    return ApiResponse(200, info, model_version=info["version"])


def get_current_model_card(request: ApiRequest, deps: ApiDeps) -> ApiResponse:
    from gemcast.models_info import current_card

    card = current_card(_need(deps.registry, "model registry"))
    return ApiResponse(200, card, model_version=card["version"])


def list_similar(request: ApiRequest, deps: ApiDeps) -> ApiResponse:
    from gemcast.inventory import parse_query, similar_response

    carat, cut, color, clarity, n = parse_query(request.query)
    stones = _need(deps.inventory, "inventory").similar(carat, cut, color, clarity, n)
    return ApiResponse(200, similar_response(carat, cut, color, clarity, n, stones))


def get_openapi(request: ApiRequest, deps: ApiDeps) -> ApiResponse:
    from gemcast.openapi import cached_document

    return ApiResponse(200, cached_document())


def get_health(request: ApiRequest, deps: ApiDeps) -> ApiResponse:
    return ApiResponse(200, {"status": "ok"})


# -- running a route: errors and the log in one place ------------------------------------------
def _request_document(request: ApiRequest) -> Any:
    if request.method == "GET":
        return {"query": dict(request.query)}
    body = request.body
    try:
        return json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return {"unparsed_body": body.decode("utf-8", "replace") if isinstance(body, bytes) else body}


def respond(route: Route, request: ApiRequest, deps: ApiDeps,
            clock: Callable[[], float] = time.perf_counter) -> ApiResponse:
    """Run ``route`` for ``request``: the answer, whatever went wrong, logged if the route is."""
    started = clock()
    if route.auth and not request.caller:
        return unauthorized(request.request_id)  # never reaches the function nor the log, as behind API Gateway
    try:
        response = route.function(request, deps)
    except ValidationError as exc:
        response = ApiResponse(400, error_body(str(exc), exc.errors))
    except NotFoundError as exc:
        response = ApiResponse(404, error_body(str(exc)))
    except EndpointError as exc:
        logger.error("model endpoint failed: %s", exc)
        response = ApiResponse(exc.status, error_body(exc.public_message))
        if exc.status == 503:
            response.headers["Retry-After"] = RETRY_AFTER_S
    if route.logged:
        response.body["request_id"] = request.request_id
        record = log_record(
            request_id=request.request_id, caller=request.caller, route=route.key,
            request=_request_document(request), response=response.body, status=response.status,
            model_version=response.model_version, latency_ms=(clock() - started) * 1000.0,
            ttl_days=deps.ttl_days,
        )
        if not _need(deps.log, "prediction log").write(record) and response.status == 200:
            # A price is handed out only once its record is kept somewhere durable.
            body_503 = {**error_body("the prediction log is unavailable, so no price is handed out: try again shortly"),
                        "request_id": request.request_id}
            return ApiResponse(503, body_503, {"Retry-After": RETRY_AFTER_S})
    return response


def handle_predictions(
    body: str | bytes | None,
    *,
    request_id: str,
    caller: str,
    endpoint: EndpointClient,
    log: PredictionLog,
    ttl_days: int = 90,
    clock: Callable[[], float] = time.perf_counter,
) -> ApiResponse:
    """POST /v1/predictions end to end, logged whatever happens."""
    from gemcast.routes import by_operation

    route = by_operation("createPrediction")
    request = ApiRequest("POST", route.path, body=body, caller=caller or "anonymous", request_id=request_id)
    return respond(route, request, StaticDeps(endpoint=endpoint, log=log, ttl_days=ttl_days), clock)
