"""The prediction API, cloud-neutral: validate, call the model endpoint, log, answer.

The AWS function (predict_proxy, behind API Gateway), the GCP function (predict) and the
local stack call ``handle_predictions`` with their own endpoint client and prediction log;
the answers, errors and status codes are therefore the same everywhere.

Answers:
- one stone: ``{"request_id", "model_version", "price", "base_price", "reasons"}``
- a list (or ``{"instances": [...]}``): ``{"request_id", "model_version", "predictions": [...]}``
  where each entry is a priced stone or ``{"error": {"message", "fields"}}``
- 400 ``{"error": {"message", "fields"}, "request_id"}`` when the body is unusable, a single
  stone is invalid, or every stone of a list is invalid
- 502 when the endpoint answered wrongly, 503 when it could not be reached or timed out.
Every request and response goes to the prediction log, whatever the status.
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
from typing import Any, Protocol

from gemcast.errors import EndpointError, ValidationError
from gemcast.predict import ENVELOPE_KEYS, parse_instances, parse_options, validate_stones

logger = logging.getLogger(__name__)

PREDICT_ROUTE = "POST /v1/predictions"


class EndpointClient(Protocol):
    def invoke(self, instances: list[dict[str, Any]], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        """``{"predictions": [...], "model_version": ...}``; raises EndpointError."""
        ...


class PredictionLog(Protocol):
    def write(self, record: dict[str, Any]) -> bool:
        """Store one record; never raises. False when it went to the fallback (DLQ)."""
        ...


@dataclass
class ApiResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    model_version: str | None = None


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
    started = clock()
    try:
        response = price_stones(body, endpoint)
    except EndpointError as exc:
        logger.error("model endpoint failed: %s", exc)
        response = ApiResponse(exc.status, error_body(exc.public_message))
        if exc.status == 503:
            response.headers["Retry-After"] = "5"
    response.body["request_id"] = request_id
    latency_ms = (clock() - started) * 1000.0
    try:
        request_doc = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        request_doc = {"unparsed_body": body.decode("utf-8", "replace") if isinstance(body, bytes) else body}
    record = log_record(
        request_id=request_id, caller=caller, route=PREDICT_ROUTE, request=request_doc, response=response.body,
        status=response.status, model_version=response.model_version, latency_ms=latency_ms, ttl_days=ttl_days,
    )
    log.write(record)
    return response
