"""GCP adapters of the cloud-neutral parts, and the logic behind the Cloud Functions.

- ``VertexEndpoint``: the model endpoint client (Vertex AI's REST ``:predict``, google-auth).
- ``FirestorePredictionLog``: the prediction log (large records and Firestore outages in the
  bucket's ``logs/``; a structured ERROR log line only when both fail).
- ``FirestoreInventory``: the inventory for "n similar stones" (two indexed range queries).
- ``vertex_submitter`` and ``SnapshotClaims``: one Vertex AI CustomJob per data snapshot.
- ``IdTokenVerifier``: Identity Platform ID tokens and blocking-function tokens (strict; the
  Firebase Auth emulator's unsigned tokens only when ``FIREBASE_AUTH_EMULATOR_HOST`` is set).
- ``serve_api``: the one HTTPS entry of the API, routing by path through ``gemcast.routes``.
- ``before_create`` / ``before_sign_in``: the Identity Platform blocking functions' decisions.

Clients come in from the caller (created once per instance by gcp/functions/main.py) and reach
the emulators or the cloud through standard settings only (``FIRESTORE_EMULATOR_HOST``,
``STORAGE_EMULATOR_HOST``, ``VERTEX_API_ENDPOINT``, ``IDENTITY_CERTS_URL``,
``FIREBASE_AUTH_EMULATOR_HOST``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from gemcast.api import pack_documents, unpack_documents
from gemcast.errors import EndpointError, GemcastError, ValidationError
from gemcast.inventory import carat_prefix, group_key, nearest, stone_of, to_item
from gemcast.log_overflow import REF_FIELD, encoded_size, follow, reference, store_whole, with_retries
from gemcast.registry import Registry
from gemcast.storage import Storage
from gemcast.trigger import RetrainRequest, Submitter, TrainingPlan, job_name, plan_training

logger = logging.getLogger(__name__)

ISSUER_PREFIX = "https://securetoken.google.com/"
TRAINING_MACHINE_TYPE = "n1-standard-4"


class TokenError(GemcastError):
    """A bearer token or blocking-function JWT is missing, malformed, expired or not ours (401)."""


class BlockedError(GemcastError):
    """An Identity Platform blocking function refused the operation (403 PERMISSION_DENIED)."""


# -- structured logs ---------------------------------------------------------------------------
def emit_structured(entry: Mapping[str, Any]) -> None:
    """One JSON line on stderr: Cloud Logging reads ``severity`` and keeps the other fields.

    Used for the records that must survive a Firestore outage; the logging module's text
    formatting would turn them into an unparsed string.
    """
    sys.stderr.write(json.dumps(dict(entry), default=str, separators=(",", ":")) + "\n")
    sys.stderr.flush()


# -- model endpoint ---------------------------------------------------------------------------
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


def vertex_base_url(api_endpoint: str) -> str:
    """``europe-west1-aiplatform.googleapis.com`` -> ``https://...``; a URL stays as it is."""
    return api_endpoint.rstrip("/") if "://" in api_endpoint else f"https://{api_endpoint.rstrip('/')}"


def vertex_session(api_endpoint: str) -> Any:
    """The HTTP session of the Vertex AI REST API: an AuthorizedSession with the function's
    service account (Application Default Credentials) for https, a plain session for a plain
    ``http://`` endpoint, so a bearer token is never sent unencrypted (the local serving process
    needs none). No google-cloud-aiplatform import: it costs seconds of a cold start."""
    import requests

    if vertex_base_url(api_endpoint).startswith("http://"):
        return requests.Session()
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return AuthorizedSession(credentials)


def job_client(api_endpoint: str) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.cloud.aiplatform_v1.services.job_service import JobServiceClient

    return JobServiceClient(
        transport="rest", client_options=ClientOptions(api_endpoint=api_endpoint),
        credentials=_credentials_for(api_endpoint),
    )


def _credentials_for(api_endpoint: str) -> Any:
    if api_endpoint.startswith("http://"):
        from google.auth.credentials import AnonymousCredentials

        return AnonymousCredentials()
    return None  # Application Default Credentials: the function's service account


def endpoint_path(project: str, region: str, endpoint_id: str) -> str:
    return f"projects/{project}/locations/{region}/endpoints/{endpoint_id}"


# Vertex AI answers overload and brief unavailability with these; they are retried within the
# time budget, and like SageMaker's throttling and 5xx they reach the caller as 503.
_RETRIED = frozenset({429, 503})


def _rpc_status(response: Any) -> str:
    """``CODE: message`` of a google.rpc.Status answer ``{"error": {"code", "message", "status"}}``."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return (getattr(response, "text", "") or "")[:200]
    if not isinstance(error, dict):
        return str(error)[:200]
    return f"{error.get('status') or error.get('code') or response.status_code}: {error.get('message', '')}"


class VertexEndpoint:
    """Calls a Vertex AI endpoint through its documented REST method
    ``POST https://{api_endpoint}/v1/{endpoint}:predict`` (locally, ``gemcast serve`` answers the
    same path). Errors become EndpointError as aws.SageMakerEndpoint makes them: 429, 5xx, a
    refused connection and a timeout are 503 (the first two retried while the budget lasts); any
    other refusal, and an answer without predictions, is 502."""

    def __init__(self, session: Any, api_endpoint: str, endpoint: str, *, timeout_s: float = 5.0,
                 attempts: int = 3, backoff_s: float = 0.1,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.session = session
        self.url = f"{vertex_base_url(api_endpoint)}/v1/{endpoint}:predict"
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.sleep = sleep

    def invoke(self, instances: list[dict[str, Any]], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        import google.auth.exceptions
        import requests

        body: dict[str, Any] = {"instances": instances, **({"parameters": parameters} if parameters else {})}
        deadline = time.monotonic() + self.timeout_s
        response: Any = None
        for attempt in range(1, self.attempts + 1):
            remaining = max(0.05, deadline - time.monotonic())
            try:
                response = self.session.post(self.url, json=body, timeout=(min(2.0, remaining), remaining))
            except (requests.exceptions.RequestException, google.auth.exceptions.TransportError,
                    google.auth.exceptions.RefreshError) as exc:  # refused, reset, timed out, no token
                raise EndpointError(f"predict {self.endpoint}: {exc}", status=503) from exc
            pause = self.backoff_s * (2 ** (attempt - 1))
            if (response.status_code in _RETRIED and attempt < self.attempts
                    and time.monotonic() + pause < deadline):
                self.sleep(pause)
                continue
            break
        status = int(response.status_code)
        if status != 200:
            unavailable = status == 429 or status >= 500
            raise EndpointError(f"predict {self.endpoint}: HTTP {status} {_rpc_status(response)}",
                                status=503 if unavailable else 502)
        try:
            payload = response.json()
        except ValueError as exc:
            raise EndpointError(f"predict {self.endpoint}: the answer is not JSON: {exc}", status=502) from exc
        predictions = payload.get("predictions") if isinstance(payload, dict) else None
        if not isinstance(predictions, list):
            raise EndpointError("the model endpoint answered without predictions", status=502)
        version = payload.get("modelVersionId") or payload.get("deployedModelId") or ""
        return {"predictions": predictions, "model_version": str(version)}


# -- prediction log ---------------------------------------------------------------------------
# A Firestore document holds 1 MiB (1,048,576 bytes, field names and the document name
# included); the budget leaves room for those.
DOCUMENT_BUDGET = 1024 * 1024 - 64 * 1024


def to_document(record: Mapping[str, Any]) -> dict[str, Any]:
    """A log record as a Firestore document: documents as JSON text (Firestore refuses nested
    arrays), compressed when large; ``expire_at`` as a timestamp for a TTL policy."""
    return _with_expiry(pack_documents(record), record)


def _with_expiry(doc: dict[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    if "expires_at" in record:
        doc["expire_at"] = datetime.fromtimestamp(int(record["expires_at"]), UTC)
    return doc


def from_document(doc: Mapping[str, Any], storage: Storage | None = None) -> dict[str, Any]:
    """A Firestore document back into a log record; a reference document (a record too large
    for Firestore) is followed to the whole record in the bucket."""
    from google.api_core.exceptions import GoogleAPIError

    plain = {k: v for k, v in doc.items() if k != "expire_at"}
    whole = follow(plain, storage, (GemcastError, GoogleAPIError, OSError, ValueError))
    if whole is not None:
        return whole
    return unpack_documents(plain)


class FirestorePredictionLog:
    """Writes log records to a Firestore collection (document id = request id); never raises.

    A record too large for a document (``DOCUMENT_BUDGET``) is first written whole to
    ``overflow`` (the data bucket's ``logs/<date>/<request id>.json``) and the document keeps its
    small fields and the reference. Each write is tried ``attempts`` times. When Firestore
    still fails, a fallback queue *in Firestore* would fail too: the bucket is the fallback
    (same key; a structured WARNING line, ``gemcast_event = prediction_log_unindexed``, names it
    for replay into Firestore; ``on_failure("bucket")``). Only when the bucket fails as well is
    the record written whole to Cloud Logging as one structured ERROR line
    (``gemcast_event = prediction_log_lost``, which a log-based metric counts), ``lost``
    incremented, ``on_failure("lost")`` called and False returned.
    """

    def __init__(self, client: Any, collection: str, *, overflow: Storage | None = None, attempts: int = 3,
                 backoff_s: float = 0.05, timeout_s: float = 3.0,
                 on_failure: Callable[[str], None] | None = None,
                 emit: Callable[[Mapping[str, Any]], None] = emit_structured) -> None:
        self.collection = client.collection(collection)
        self.overflow = overflow
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.on_failure = on_failure or (lambda _kind: None)
        self.emit = emit
        self.lost = 0
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> bool:
        """True when the record is stored: in Firestore (whole or by reference) or the bucket."""
        from google.api_core import exceptions as gexc

        doc = to_document(record)
        uri: str | None = None
        error: Exception | None = None
        if encoded_size(doc) > DOCUMENT_BUDGET:
            uri, error = self._to_bucket(record)
            if uri is not None:
                doc = _with_expiry(reference(record, uri), record)
        if uri is not None or error is None:
            ref = self.collection.document(str(record["request_id"]))
            # set() is idempotent: a retry after a write that did land changes nothing.
            error = with_retries(lambda: ref.set(doc, retry=None, timeout=self.timeout_s),
                                 (gexc.GoogleAPIError, OSError), attempts=self.attempts,
                                 backoff_s=self.backoff_s, what="prediction log write",
                                 on_retry=lambda: self.on_failure("retry"))
            if error is None:
                return True
            if uri is None:
                uri, _ = self._to_bucket(record)
        if uri is not None:
            self.on_failure("bucket")
            self.emit({
                "severity": "WARNING",
                "message": f"prediction log record {record.get('request_id')} is in {uri} but not in "
                           f"Firestore ({error}): replay it from there",
                "gemcast_event": "prediction_log_unindexed",
                REF_FIELD: uri,
                "logging.googleapis.com/labels": {"gemcast_event": "prediction_log_unindexed"},
            })
            return True
        with self._lock:
            self.lost += 1
        self.on_failure("lost")
        self.emit({
            "severity": "ERROR",
            "message": f"prediction log record {record.get('request_id')} could not be stored in Firestore "
                       f"or the bucket after {self.attempts} attempts: {error}",
            "gemcast_event": "prediction_log_lost",
            "prediction_log_record": record,
            "logging.googleapis.com/labels": {"gemcast_event": "prediction_log_lost"},
        })
        return False

    def _to_bucket(self, record: dict[str, Any]) -> tuple[str | None, Exception | None]:
        from google.api_core import exceptions as gexc

        if self.overflow is None:
            return None, GemcastError("no PREDICTION_LOG_URI is set: the record has no bucket to go to")
        overflow = self.overflow
        uri: list[str] = []
        error = with_retries(lambda: uri.append(store_whole(overflow, record)),
                             (gexc.GoogleAPIError, OSError, ValueError), attempts=self.attempts,
                             backoff_s=self.backoff_s, what="prediction log record to the bucket",
                             on_retry=lambda: self.on_failure("retry"))
        return (uri[-1], None) if error is None else (None, error)


def recent_for_caller(client: Any, collection: str, caller: str, limit: int = 20,
                      storage: Storage | None = None) -> list[dict[str, Any]]:
    """The caller's own most recent log records, newest first (index caller asc, created_at desc);
    a record kept in the bucket (``storage``, the log prefix) is read from there."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (client.collection(collection).where(filter=FieldFilter("caller", "==", caller))
             .order_by("created_at", direction="DESCENDING").limit(max(1, min(limit, 100))))
    return [from_document(snap.to_dict(), storage) for snap in query.stream()]


# -- inventory ---------------------------------------------------------------------------------
# Firestore's 500/50/5 rule (best practices, "Ramping up traffic"): at most 500 operations a
# second to a new collection, then 50% more every 5 minutes, so that it can split its tablets.
RAMP_START_OPS = 500
# No cap of ours: the top of the production ramp, and the emulator's whole rate (one process in
# memory with no tablets to split: its own speed is the limit).
UNCAPPED_OPS = 1_000_000
WRITE_ATTEMPTS = 10


def write_pb(document_path: str, item: Mapping[str, Any]) -> Any | None:
    """The raw protobuf ``Write`` that ``BulkWriter.set(reference, item)`` sends for an item of
    text and numbers, or None for any other item (then the library's own encoding applies).

    Built in protobuf's C implementation in one pass: the library gets the same message through
    proto-plus wrappers, one per value (``_helpers.pbs_for_set_no_merge``), ten times the CPU of
    a 50,000-stone load. tests/unit/test_inventory_writes.py checks both give the same bytes.
    """
    from google.cloud.firestore_v1.types import write as write_types

    write = write_types.Write.pb()()
    write.update.name = document_path
    fields = write.update.fields
    for name, value in item.items():
        kind = type(value)
        if kind is str:
            fields[name].string_value = value
        elif kind is float:
            fields[name].double_value = value
        elif kind is int and -2**63 <= value < 2**63:
            fields[name].integer_value = value
        else:
            return None
    return write


@functools.cache
def stone_writer_class() -> type:
    """A ``BulkWriter`` whose ``set`` of a plain item (``write_pb``) hands the batch a Write it
    built itself; batching, the rate, parallel sends and the retries of failed writes (which call
    ``set`` again) are the library's own."""
    from dataclasses import dataclass

    from google.cloud.firestore_v1.bulk_writer import BulkWriter, BulkWriterSetOperation
    from google.cloud.firestore_v1.types import write as write_types

    @dataclass
    class PreparedSet(BulkWriterSetOperation):
        write: Any = None

        def add_to_batch(self, batch: Any) -> None:
            # What BaseBatch.set does, with the Write already made.
            batch._document_references[self.reference._document_path] = self.reference
            batch._add_write_pbs([write_types.Write.wrap(self.write)])

    class StoneWriter(BulkWriter):
        def set(self, reference: Any, document_data: dict[str, Any], merge: Any = False,
                attempts: int = 0) -> None:
            write = None if merge is not False else write_pb(reference._document_path, document_data)
            if write is None:
                super().set(reference, document_data, merge=merge, attempts=attempts)
                return
            # BulkWriter.set, with the operation that carries its Write.
            self._verify_not_closed()
            if reference._document_path in self._operations_document_paths:
                self._enqueue_current_batch()
            self._operations.append(PreparedSet(reference=reference, document_data=document_data,
                                                attempts=attempts, write=write))
            self._operations_document_paths.append(reference._document_path)
            self._maybe_enqueue_current_batch()

    return StoneWriter


class FirestoreInventory:
    """The inventory in a Firestore collection: one document per stone (id = stone id), the
    item of ``gemcast.inventory.to_item``. ``similar`` runs the two
    range queries that the composite indexes of gcp/firestore.indexes.json serve.

    ``ops_per_second`` caps the BulkWriter of ``put_stones``. By default it starts at Firestore's
    500 a second and ramps up by the 500/50/5 rule, except against the emulator
    (``FIRESTORE_EMULATOR_HOST``, the variable that points the client library at it), which has
    nothing to ramp up: there it is lifted, or 50,000 stones would take 100 s for no reason.
    """

    def __init__(self, client: Any, collection: str, *, ops_per_second: int | None = None) -> None:
        self.client = client
        self.collection = client.collection(collection)
        self.ops_per_second = ops_per_second or (UNCAPPED_OPS if os.environ.get("FIRESTORE_EMULATOR_HOST") else None)

    def writer_options(self) -> Any:
        """The BulkWriterOptions of a load: batches sent in parallel; the rate as in the class doc."""
        from google.cloud.firestore_v1.bulk_writer import BulkWriterOptions, SendMode

        if self.ops_per_second is None:
            # The library's max_ops_per_second defaults to the start rate, which would stop the
            # ramp at 500 a second for good; the rule's 50% every 5 minutes is what it allows.
            return BulkWriterOptions(initial_ops_per_second=RAMP_START_OPS, max_ops_per_second=UNCAPPED_OPS,
                                     mode=SendMode.parallel)
        return BulkWriterOptions(initial_ops_per_second=self.ops_per_second,
                                 max_ops_per_second=self.ops_per_second, mode=SendMode.parallel)

    def new_writer(self) -> Any:
        """The BulkWriter of one load (``stone_writer_class``, with ``writer_options``)."""
        return stone_writer_class()(client=self.client, options=self.writer_options())

    def put_stones(self, stones: Iterable[Mapping[str, Any]]) -> int:
        """Firestore's BulkWriter (see ``writer_options``; its Writes made by ``write_pb``), each
        failed write retried with the writer's backoff; a write that still fails after
        WRITE_ATTEMPTS is raised, never dropped."""
        failures: list[str] = []

        def on_error(error: Any, writer: Any) -> bool:
            if error.attempts < WRITE_ATTEMPTS:
                return True  # retry, with the writer's own backoff
            failures.append(f"{error.operation.reference.id}: {error.message}")
            return False

        count = 0
        writer = self.new_writer()
        writer.on_write_error(on_error)
        for stone in stones:
            item = to_item(stone)
            # Same stone, same document: loading a batch twice changes nothing.
            writer.set(self.collection.document(stone_of(item)), item)
            count += 1
        writer.close()  # waits for every write, retries included
        if failures:
            raise GemcastError(f"{len(failures)} stones could not be written to Firestore, e.g. {failures[0]}")
        return count

    def similar(self, carat: float, cut: str, color: str, clarity: str, n: int) -> list[dict[str, Any]]:
        from google.cloud.firestore_v1.base_query import FieldFilter

        group = group_key(cut, color, clarity)
        in_group = self.collection.where(filter=FieldFilter("stone_group", "==", group))
        pivot = carat_prefix(carat)
        above = (in_group.where(filter=FieldFilter("carat_key", ">=", pivot))
                 .order_by("carat_key", direction="ASCENDING").limit(n))
        below = (in_group.where(filter=FieldFilter("carat_key", "<", pivot))
                 .order_by("carat_key", direction="DESCENDING").limit(n))
        stones = nearest(carat, [doc.to_dict() for doc in above.stream()],
                         [doc.to_dict() for doc in below.stream()], n)
        # DynamoDB hands back a whole price as an integer (gemcast.inventory.plain); so must we,
        # or the same stone reads 3419 on AWS and 3419.0 here.
        for stone in stones:
            price = stone.get("price")
            if isinstance(price, float) and price.is_integer():
                stone["price"] = int(price)
        return stones


# -- training trigger --------------------------------------------------------------------------
def custom_job_spec(plan: TrainingPlan, *, image_uri: str, service_account: str = "",
                    machine_type: str = TRAINING_MACHINE_TYPE) -> dict[str, Any]:
    """The Vertex AI CustomJob: the training image's ``train`` entrypoint on the snapshot."""
    job_spec: dict[str, Any] = {
        "worker_pool_specs": [{
            "machine_spec": {"machine_type": machine_type},
            "replica_count": 1,
            "container_spec": {
                "image_uri": image_uri,
                "args": ["train", "--data", plan.data_uri, "--registry", plan.registry_uri],
            },
        }],
    }
    if service_account:
        job_spec["service_account"] = service_account
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(plan.snapshot_id).lower())[:63]
    return {"display_name": job_name(plan), "job_spec": job_spec, "labels": {"gemcast-snapshot": label}}


def vertex_submitter(client: Any, *, project: str, region: str, image_uri: str,
                     service_account: str = "", timeout_s: float = 30.0) -> Submitter:
    """Start a Vertex AI CustomJob for a plan through ``JobServiceClient.create_custom_job``."""

    def submit(plan: TrainingPlan) -> dict[str, Any]:
        job = client.create_custom_job(
            parent=f"projects/{project}/locations/{region}",
            custom_job=custom_job_spec(plan, image_uri=image_uri, service_account=service_account),
            timeout=timeout_s,
        )
        return {"job_name": job.name, "display_name": job.display_name, "state": job.state.name}

    return submit


class SnapshotClaims:
    """One Firestore document per snapshot (``snapshots/<id>``): created once, so one job each."""

    def __init__(self, client: Any, collection: str) -> None:
        self.collection = client.collection(collection)

    def claim(self, snapshot_id: str) -> bool:
        from google.api_core.exceptions import AlreadyExists

        try:
            self.collection.document(snapshot_id).create(
                {"snapshot_id": snapshot_id, "state": "starting", "at": datetime.now(UTC)})
        except AlreadyExists:
            return False
        return True

    def record(self, snapshot_id: str, job: Mapping[str, Any]) -> None:
        self.collection.document(snapshot_id).update({"state": "started", "job": dict(job)})

    def release(self, snapshot_id: str) -> None:
        self.collection.document(snapshot_id).delete()

    def get(self, snapshot_id: str) -> dict[str, Any] | None:
        snap = self.collection.document(snapshot_id).get()
        return snap.to_dict() if snap.exists else None


def start_training(data: Storage, registry: Registry, claims: SnapshotClaims,
                   submit: Submitter, request: RetrainRequest | None = None) -> dict[str, Any]:
    """Start a job when the curated data changed (or a drift alarm asks), at most one per run key."""
    plan = plan_training(data, registry, request)
    out: dict[str, Any] = {"plan": plan.as_dict(), "started": False, "reason": plan.reason}
    if not plan.needed or plan.run_key is None:
        return out
    key = plan.run_key
    if not claims.claim(key):
        out["reason"] = f"a training job for {key} was already started"
        out["job"] = (claims.get(key) or {}).get("job")
        return out
    try:
        job = submit(plan)
    except Exception:
        claims.release(key)  # let the next scheduled run try again
        raise
    claims.record(key, job)
    logger.info("started training job %s for %s", job.get("job_name"), key)
    return {**out, "started": True, "job": job}


# -- tokens ------------------------------------------------------------------------------------
class CachingRequest:
    """A google.auth transport request that keeps GET answers (the signing certs) for a while,
    so a warm instance does not fetch the certs on every call."""

    def __init__(self, inner: Any = None, ttl_s: float = 3600.0) -> None:
        if inner is None:
            import google.auth.transport.requests
            import requests

            inner = google.auth.transport.requests.Request(requests.Session())
        self.inner = inner
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        if method != "GET":
            return self.inner(url, method=method, **kwargs)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(url)
        if hit and hit[0] > now:
            return hit[1]
        kwargs.setdefault("timeout", 5)
        response = self.inner(url, method=method, **kwargs)
        if response.status == 200:
            with self._lock:
                self._cache[url] = (now + self.ttl_s, response)
        return response

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()


def blocking_audience(project: str) -> Callable[[Any], bool]:
    """A blocking-function token's ``aud`` is the function's own https URL (run.app, or
    ``<region>-<project>.cloudfunctions.net``); ``iss`` ties it to the project."""
    import re

    cloudfunctions = re.compile(rf"[a-z]+(?:-[a-z]+)*\d+-{re.escape(project)}\.cloudfunctions\.net")

    def matches(audience: Any) -> bool:
        if not isinstance(audience, str):
            return False
        parts = urlsplit(audience)
        host = parts.hostname or ""
        return parts.scheme == "https" and (host.endswith(".run.app") or bool(cloudfunctions.fullmatch(host)))

    return matches


class IdTokenVerifier:
    """Verifies Identity Platform JWTs: RS256, signed by a key of ``certs_url``, issued by
    ``https://securetoken.google.com/<project>``, for our audience, with a subject.

    ``certs_url`` is a setting (``IDENTITY_CERTS_URL``): Google's securetoken certs in the
    cloud, the local stack's certs on a laptop; the code path is the same.
    """

    def __init__(self, project: str, certs_url: str, *, audience: str | None = None,
                 audience_matcher: Callable[[Any], bool] | None = None, request: Any = None,
                 clock_skew_s: int = 10, emulator_host: str = "") -> None:
        if not project:
            raise GemcastError("IdTokenVerifier needs the project id (IDENTITY_AUDIENCE)")
        self.project = project
        self.emulator_host = emulator_host
        self.issuer = ISSUER_PREFIX + project
        self.certs_url = certs_url
        self.audience = audience if audience is not None else project
        self.audience_matcher = audience_matcher
        self.request: Any = request if request is not None else CachingRequest()
        self.clock_skew_s = clock_skew_s

    def verify(self, token: str) -> dict[str, Any]:
        import google.auth.exceptions
        from google.auth import jwt
        from google.oauth2 import id_token

        if not token:
            raise TokenError("no token")
        try:
            header = jwt.decode_header(token)
        except (ValueError, TypeError) as exc:
            raise TokenError(f"not a JWT: {exc}") from exc
        if self.emulator_host:
            # Where the Firebase Auth emulator stands in, every token it issues is unsigned, and
            # no signing certs are fetched from anywhere.
            if header.get("alg") != "none":
                raise TokenError("the Firebase Auth emulator issues unsigned tokens; this one is signed")
            return self._check_claims(self._unsigned_claims(token), emulated=True)
        if header.get("alg") != "RS256" or not header.get("kid"):
            raise TokenError("the token must be RS256 with a key id")
        try:
            claims = dict(id_token.verify_token(
                token, self.request, audience=None if self.audience_matcher else self.audience,
                certs_url=self.certs_url, clock_skew_in_seconds=self.clock_skew_s))
        except google.auth.exceptions.TransportError as exc:
            raise GemcastError(f"could not fetch the signing certs from {self.certs_url}: {exc}") from exc
        except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
            # An unknown key id may be a rotation: fetch the certs once more, then give up.
            if "Certificate for key id" in str(exc) and isinstance(self.request, CachingRequest):
                self.request.forget()
                return self._verified_again(token)
            raise TokenError(str(exc)) from exc
        return self._check_claims(claims)

    def _verified_again(self, token: str) -> dict[str, Any]:
        from google.oauth2 import id_token

        try:
            claims = dict(id_token.verify_token(
                token, self.request, audience=None if self.audience_matcher else self.audience,
                certs_url=self.certs_url, clock_skew_in_seconds=self.clock_skew_s))
        except ValueError as exc:
            raise TokenError(str(exc)) from exc
        return self._check_claims(claims)

    def _unsigned_claims(self, token: str) -> dict[str, Any]:
        """The claims of an unsigned token of the Firebase Auth emulator, which signs nothing;
        only reached when FIREBASE_AUTH_EMULATOR_HOST is set, as in the Firebase Admin SDK.
        Expiry, issuer, audience and subject are checked as for a signed token."""
        from google.auth import jwt

        try:
            claims = dict(jwt.decode(token, verify=False))
        except (ValueError, TypeError) as exc:
            raise TokenError(f"not a JWT: {exc}") from exc
        now = time.time()
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] + self.clock_skew_s < now:
            raise TokenError("the token has expired")
        if not isinstance(claims.get("iat"), int | float) or claims["iat"] - self.clock_skew_s > now:
            raise TokenError("the token was issued in the future")
        if not self.audience_matcher and claims.get("aud") != self.audience:
            raise TokenError(f"audience {claims.get('aud')!r} is not {self.audience!r}")
        return claims

    def _check_claims(self, claims: dict[str, Any], *, emulated: bool = False) -> dict[str, Any]:
        if claims.get("iss") != self.issuer:
            raise TokenError(f"issuer {claims.get('iss')!r} is not {self.issuer!r}")
        # The emulator posts to a blocking function at its local URL, which is its audience.
        local = emulated and urlsplit(str(claims.get("aud"))).hostname in {"127.0.0.1", "localhost"}
        if self.audience_matcher and not local and not self.audience_matcher(claims.get("aud")):
            raise TokenError(f"audience {claims.get('aud')!r} is not this function")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 128:
            raise TokenError("the token has no usable subject")
        return claims


def bearer_token(headers: Mapping[str, str] | Any) -> str:
    """The token of an ``Authorization: Bearer`` header (a dict or werkzeug's Headers)."""
    value = str(headers.get("Authorization") or headers.get("authorization") or "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("no bearer token")
    return token.strip()


# -- Identity Platform blocking functions -------------------------------------------------------
EVENT_BEFORE_CREATE = "beforeCreate"
EVENT_BEFORE_SIGN_IN = "beforeSignIn"


def blocking_claims(body: Any, verifier: IdTokenVerifier, event_type: str) -> dict[str, Any]:
    """The verified claims of a blocking-function request body ``{"data": {"jwt": ...}}``."""
    data = body.get("data") if isinstance(body, Mapping) else None
    token = data.get("jwt") if isinstance(data, Mapping) else None
    if not isinstance(token, str):
        raise ValidationError("a blocking-function request carries data.jwt", {"data.jwt": "is missing"})
    claims = verifier.verify(token)
    if claims.get("event_type") != event_type:
        raise ValidationError(f"this function handles {event_type}, got {claims.get('event_type')!r}",
                              {"event_type": f"must be {event_type}"})
    return claims


def _user_record(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    record = claims.get("user_record")
    return record if isinstance(record, Mapping) else {}


def _custom_claims(record: Mapping[str, Any]) -> dict[str, Any]:
    raw = record.get("custom_claims")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    return dict(raw) if isinstance(raw, Mapping) else {}


def before_create(claims: Mapping[str, Any], allowed_domains: tuple[str, ...],
                  default_tier: str) -> dict[str, Any]:
    """Refuse an e-mail outside the allowed domains (same rule as the Cognito pre sign-up);
    give a new user the default tier as a custom claim (the Cognito post-confirmation profile)."""
    from gemcast.auth_hooks import TIER_CLAIM, SignUpDeniedError, check_sign_up

    record = _user_record(claims)
    try:
        check_sign_up(str(record.get("email") or ""), allowed_domains, auto_confirm=False)
    except SignUpDeniedError as exc:
        raise BlockedError(str(exc)) from exc
    custom = _custom_claims(record)
    custom.setdefault(TIER_CLAIM, default_tier)
    return {"userRecord": {"customClaims": custom, "updateMask": "customClaims"}}


def before_sign_in(claims: Mapping[str, Any], default_tier: str) -> dict[str, Any]:
    """Put the ``tier`` claim in the ID token: the user's own (an admin may change it with
    custom claims), else the default (the Cognito pre token generation hook)."""
    from gemcast.auth_hooks import TIER_CLAIM

    tier = _custom_claims(_user_record(claims)).get(TIER_CLAIM) or default_tier
    return {"userRecord": {"sessionClaims": {TIER_CLAIM: str(tier)}, "updateMask": "sessionClaims"}}


# -- the HTTP side of the functions --------------------------------------------------------------
HttpResult = tuple[str, int, dict[str, str]]


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> HttpResult:
    """A (body, status, headers) tuple as Flask (functions-framework) takes it."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return json.dumps(body, separators=(",", ":"), default=str), status, all_headers


def serve_api(request: Any, deps: Any, verifier: Callable[[], IdTokenVerifier]) -> HttpResult:
    """The one HTTPS doorway of the API on GCP, routing by path as API Gateway does for the
    Lambdas: the route from ``gemcast.routes``, the Identity Platform ID token checked where the
    route needs a caller (401 ``gemcast.api.unauthorized()`` otherwise, API Gateway's answer),
    then ``gemcast.api.respond``, so answers, errors, status codes and headers are AWS's."""
    import uuid

    from gemcast.api import ApiRequest, error_body, respond, unauthorized
    from gemcast.routes import find

    route, path_known = find(request.method, request.path)
    if route is None:
        if path_known:
            return json_response(405, error_body(f"{request.method} is not allowed on {request.path}"))
        return json_response(404, error_body(f"no route {request.method} {request.path}"))
    caller = ""
    if route.auth:
        try:
            caller = str(verifier().verify(bearer_token(request.headers))["sub"])
        except TokenError as exc:
            logger.info("unauthorized %s: %s", route.key, exc)
            answer = unauthorized(uuid.uuid4().hex)
            return json_response(answer.status, answer.body, answer.all_headers())
    api_request = ApiRequest(method=route.method, path=route.path, query=dict(request.args.items()),
                             body=request.get_data(), caller=caller, request_id=uuid.uuid4().hex)
    answer = respond(route, api_request, deps)
    return json_response(answer.status, answer.body, answer.all_headers())


def api_errors(handler: Callable[..., HttpResult]) -> Callable[..., HttpResult]:
    """Errors of an HTTP function outside the route table (check_drift) as responses, in the
    shapes of ``gemcast.api.respond``: a refused token is API Gateway's 401, a bad request 400."""
    import functools

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> HttpResult:
        import uuid

        from gemcast.api import error_body, unauthorized

        try:
            return handler(*args, **kwargs)
        except TokenError as exc:
            logger.info("unauthorized: %s", exc)
            answer = unauthorized(uuid.uuid4().hex)
            return json_response(answer.status, answer.body, answer.all_headers())
        except ValidationError as exc:
            return json_response(400, error_body(str(exc), exc.errors))

    return wrapper


def blocking_errors(handler: Callable[..., HttpResult]) -> Callable[..., HttpResult]:
    """Errors of the blocking functions in the shape Identity Platform reads:
    ``{"error": {"status", "message"}}``; its message is shown to the person signing in."""
    import functools

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> HttpResult:
        try:
            return handler(*args, **kwargs)
        except BlockedError as exc:
            return json_response(403, {"error": {"status": "PERMISSION_DENIED", "message": str(exc)}})
        except TokenError as exc:
            logger.warning("blocking function token refused: %s", exc)
            return json_response(401, {"error": {"status": "UNAUTHENTICATED", "message": "invalid token"}})
        except ValidationError as exc:
            return json_response(400, {"error": {"status": "INVALID_ARGUMENT", "message": str(exc)}})

    return wrapper


# -- batch prediction (gemcast score --on vertex) ----------------------------------------------
def submit_batch_prediction(client: Any, *, project: str, region: str, model: str, input_uri: str,
                            output_uri: str, display_name: str, machine_type: str = "n1-standard-2",
                            replicas: int = 1, service_account: str = "", timeout_s: float = 30.0) -> dict[str, Any]:
    """Start a Vertex AI BatchPredictionJob on the serving image (``JobServiceClient``, REST).

    ``model`` is the Vertex Model resource (``projects/.../models/ID``) whose container is the
    serving image. Vertex reads the CSV (its first line the header), sends the container
    ``{"instances": [[values in column order], ...]}`` — the serving image's list-of-values form —
    and writes ``predictions_*.jsonl`` under ``output_uri``, each line with its instance.
    """
    from google.cloud.aiplatform_v1.types import BatchPredictionJob, GcsDestination, GcsSource, MachineSpec
    from google.cloud.aiplatform_v1.types.machine_resources import BatchDedicatedResources

    from gemcast.errors import ConfigError

    if not (input_uri.startswith("gs://") and output_uri.startswith("gs://")):
        raise ConfigError(f"Vertex batch prediction reads and writes gs:// URIs, got {input_uri!r} and {output_uri!r}")
    kind = "jsonl" if input_uri.endswith(".jsonl") else "csv"
    job = BatchPredictionJob(
        display_name=display_name,
        model=model,
        input_config=BatchPredictionJob.InputConfig(instances_format=kind, gcs_source=GcsSource(uris=[input_uri])),
        output_config=BatchPredictionJob.OutputConfig(
            predictions_format="jsonl", gcs_destination=GcsDestination(output_uri_prefix=output_uri.rstrip("/"))),
        dedicated_resources=BatchDedicatedResources(
            machine_spec=MachineSpec(machine_type=machine_type),
            starting_replica_count=replicas, max_replica_count=replicas),
        service_account=service_account,
        labels={"app": "gemcast", "purpose": "score"},
    )
    created = client.create_batch_prediction_job(parent=f"projects/{project}/locations/{region}",
                                                 batch_prediction_job=job, timeout=timeout_s)
    return {"platform": "vertex", "job_name": created.name, "display_name": created.display_name,
            "state": created.state.name, "output": output_uri}
