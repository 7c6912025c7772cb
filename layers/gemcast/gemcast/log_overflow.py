"""Prediction log records too large for their table: the whole record in the data bucket.

A DynamoDB item holds at most 400 KB, an SQS message 256 KiB and a Firestore document 1 MiB.
``pack_documents`` compresses large request and response documents, but an incompressible
body still overflows. Such a record is written whole to ``logs/<date>/<request id>.json`` of the
data bucket (``PREDICTION_LOG_URI``) *before* the table item, and the item keeps the small
fields and ``record_uri``; readers follow the reference (``load_whole``). The same key serves
as the durable fallback when the table itself fails (the GCP log), so a record is always in
the table, the bucket or the dead-letter queue, never only in a log line.

The IAM policies (template.yaml, gcp/iam) grant exactly the ``logs/`` prefix.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from gemcast.storage import Storage, read_uri

logger = logging.getLogger(__name__)

LOG_PREFIX = "logs"
REF_FIELD = "record_uri"
SIZE_FIELD = "record_bytes"
# Set by a reader when the bucket could not give the whole record back (it keeps the small fields).
UNAVAILABLE_FIELD = "record_unavailable"
# What a reference item keeps: enough to list, count and find a caller's requests.
SMALL_FIELDS = ("request_id", "created_at", "caller", "route", "status", "model_version", "latency_ms",
                "expires_at")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON: an upper bound of its size as a DynamoDB item,
    Firestore document or SQS body (each counts UTF-8 text and field names)."""
    return len(json.dumps(value, separators=(",", ":"), default=str).encode())


def record_key(record: Mapping[str, Any]) -> str:
    """``<date>/<request id>.json`` under the log prefix; the id made safe for an object key."""
    date = str(record.get("created_at") or "")[:10]
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        date = "undated"
    request_id = _UNSAFE.sub("_", str(record.get("request_id") or "")).strip(".") or "no-request-id"
    return f"{date}/{request_id[:200]}.json"


def whole_bytes(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), default=str).encode()


def store_whole(storage: Storage, record: Mapping[str, Any]) -> str:
    """Write the record to the bucket; its full URI, which the reference item keeps."""
    key = record_key(record)
    storage.write_bytes(key, whole_bytes(record), content_type="application/json")
    return f"{storage.uri}/{key}"


def reference(record: Mapping[str, Any], uri: str) -> dict[str, Any]:
    """The small fields of a record and where the whole record is."""
    out = {k: record[k] for k in SMALL_FIELDS if k in record}
    out[REF_FIELD] = uri
    out[SIZE_FIELD] = len(whole_bytes(record))
    return out


def load_whole(stored: Mapping[str, Any], storage: Storage | None = None) -> dict[str, Any] | None:
    """The whole record a reference item points to (None when ``stored`` is no reference)."""
    uri = stored.get(REF_FIELD)
    if not isinstance(uri, str) or not uri:
        return None
    if storage is not None and uri.startswith(storage.uri.rstrip("/") + "/"):
        data = storage.read_bytes(uri[len(storage.uri.rstrip("/")) + 1:])
    else:
        data = read_uri(uri)
    record: dict[str, Any] = json.loads(data)
    return record


def follow(stored: Mapping[str, Any], storage: Storage | None,
           errors: tuple[type[BaseException], ...]) -> dict[str, Any] | None:
    """What a reader gives for a stored item: the whole record its reference points to, or,
    when the bucket cannot give it back (``errors``), the small fields marked unavailable, so
    a reader (the caller's history, the drift check) goes on; None when it is no reference."""
    try:
        whole = load_whole(stored, storage)
    except errors as exc:
        logger.warning("log record %s: its whole record at %s cannot be read: %s", stored.get("request_id"),
                       stored.get(REF_FIELD), exc)
        return {**stored, UNAVAILABLE_FIELD: f"the whole record could not be read from {stored.get(REF_FIELD)}"}
    return None if whole is None else {**whole, REF_FIELD: stored[REF_FIELD]}


def with_retries(action: Callable[[], Any], errors: tuple[type[BaseException], ...], *, attempts: int,
                 backoff_s: float, what: str, on_retry: Callable[[], None] = lambda: None) -> Exception | None:
    """Run ``action`` up to ``attempts`` times; None on success, else the last error."""
    error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            action()
            return None
        except errors as exc:
            error = exc if isinstance(exc, Exception) else Exception(str(exc))
            on_retry()
            logger.warning("%s %d/%d failed: %s", what, attempt, attempts, exc)
            if attempt < attempts:
                time.sleep(backoff_s * (2 ** (attempt - 1)))
    return error
