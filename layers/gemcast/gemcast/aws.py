"""AWS adapters of the cloud-neutral parts: the SageMaker endpoint client and the DynamoDB
prediction log (with its SQS dead-letter queue). boto3 only; clients come in from the
caller, created once per Lambda container.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from gemcast.api import pack_documents, unpack_documents
from gemcast.errors import EndpointError, GemcastError
from gemcast.log_overflow import encoded_size, follow, reference, store_whole, with_retries
from gemcast.storage import Storage

logger = logging.getLogger(__name__)

# DynamoDB items hold 400 KB and SQS messages 256 KiB; the budgets leave room for the
# attribute names' and the message attributes' own bytes.
ITEM_BUDGET = 400 * 1024 - 16 * 1024
SQS_BODY_BUDGET = 256 * 1024 - 8 * 1024


def endpoint_client_config(timeout_s: float) -> Any:
    """Timeouts and retries (throttling included) for sagemaker-runtime."""
    from botocore.config import Config

    return Config(
        connect_timeout=min(2.0, timeout_s),
        read_timeout=timeout_s,
        retries={"mode": "standard", "max_attempts": 3},
    )


# Errors of sagemaker-runtime InvokeEndpoint that mean "not now": the caller may retry.
_RETRYABLE_CODES = frozenset({"ThrottlingException", "ModelNotReadyException", "ServiceUnavailable",
                              "InternalFailure", "InternalDependencyException", "ValidationError"})


def endpoint_error(endpoint_name: str, exc: Exception) -> EndpointError:
    """The EndpointError for a failed invoke_endpoint, as SageMaker really fails.

    - ``ModelError`` (424): the container answered with an error. SageMaker puts the container's
      status and body in ``OriginalStatusCode`` and ``OriginalMessage``; a container that timed
      out (60 s) or is still loading (503) means unavailable (503), any other answer a broken
      contract between the proxy and the image (502).
    - ``ThrottlingException`` (a serverless endpoint at its concurrency), ``ModelNotReadyException``,
      ``ServiceUnavailable``, ``InternalFailure``, and ``ValidationError`` (no such endpoint, for
      example during a first deploy): 503, with Retry-After set by the caller.
    - botocore's own errors (connection refused, connect or read timeouts): 503.
    """
    from botocore.exceptions import ClientError

    where = f"invoke_endpoint {endpoint_name}"
    if not isinstance(exc, ClientError):
        return EndpointError(f"{where}: {type(exc).__name__}: {exc}", status=503)
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code == "ModelError":
        original = exc.response.get("OriginalStatusCode")
        original_status = int(original) if isinstance(original, int | str) and str(original).isdigit() else 0
        message = str(exc.response.get("OriginalMessage") or error.get("Message") or "")
        timed_out = original_status == 0 or "timed out" in message
        return EndpointError(
            f"{where}: the model container answered {original_status or 'nothing'}: {message[:500]}",
            status=503 if timed_out or original_status == 503 else 502,
        )
    retryable = code in _RETRYABLE_CODES or status >= 500 or status == 429
    return EndpointError(f"{where}: {code or status} {error.get('Message', exc)}", status=503 if retryable else 502)


class SageMakerEndpoint:
    """Calls a SageMaker endpoint (or, locally, the SageMaker-runtime stand-in in front of the
    serving process, which fails the way SageMaker does)."""

    def __init__(self, client: Any, endpoint_name: str) -> None:
        self.client = client
        self.endpoint_name = endpoint_name

    def invoke(self, instances: list[dict[str, Any]], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                Body=json.dumps({"instances": instances} | ({"parameters": parameters} if parameters else {})).encode(),
            )
            payload = json.loads(response["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            raise endpoint_error(self.endpoint_name, exc) from exc
        except ValueError as exc:
            raise EndpointError(f"invoke_endpoint {self.endpoint_name}: the answer is not JSON: {exc}",
                                status=502) from exc
        if not isinstance(payload, dict):
            raise EndpointError("the model endpoint answered with something other than an object", status=502)
        return payload


class LazyClient:
    """A boto3 client created at its first use: for clients a request seldom needs (the
    dead-letter queue of failed log writes), so the cold start does not pay for them."""

    def __init__(self, service: str, **kwargs: Any) -> None:
        self._service = service
        self._kwargs = kwargs
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client(self._service, **self._kwargs)
        return getattr(self._client, name)


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    return value


def to_item(record: dict[str, Any]) -> dict[str, Any]:
    """A log record as a DynamoDB item: documents as JSON text, compressed when large."""
    return dict(_to_dynamo(pack_documents(record)))


def from_item(item: dict[str, Any], storage: Storage | None = None) -> dict[str, Any]:
    """A DynamoDB item back into a log record; a reference item (a record too large for the
    table) is followed to the whole record in the bucket."""
    out: dict[str, Any] = {}
    for k, v in item.items():
        if isinstance(v, Decimal):
            v = int(v) if v == v.to_integral_value() and k != "latency_ms" else float(v)
        out[k] = v
    from botocore.exceptions import BotoCoreError, ClientError

    whole = follow(out, storage, (GemcastError, ClientError, BotoCoreError, ValueError))
    if whole is not None:
        return whole
    return unpack_documents(out)


def log_client_config() -> Any:
    """Short timeouts and no botocore retries for the log's DynamoDB, S3 and SQS clients: the
    log retries on its own, and a paused or stopped store must not hold a request for minutes."""
    from botocore.config import Config

    return Config(connect_timeout=1.0, read_timeout=2.0, retries={"mode": "standard", "max_attempts": 1})


def dead_letters(record: dict[str, Any], stored: dict[str, Any]) -> list[str]:
    """The SQS message bodies that carry a record: the record itself when it fits (what an
    operator replays), else ``stored`` (the packed item or the bucket reference), else
    ``stored`` cut into numbered parts (``dlq_format: part``) that ``records_from_dead_letters``
    joins again."""
    whole = json.dumps(record, default=str)
    if len(whole.encode()) <= SQS_BODY_BUDGET:
        return [whole]
    packed = json.dumps({"dlq_format": "item", "item": stored}, default=str)
    if len(packed.encode()) <= SQS_BODY_BUDGET:
        return [packed]
    # The packed text is ASCII (json.dumps escapes the rest) and only its quotes and backslashes
    # are escaped again inside a part, so a part is at most twice its slice.
    text = json.dumps(stored, default=str)
    size = SQS_BODY_BUDGET // 2 - 1024
    slices = [text[i:i + size] for i in range(0, len(text), size)]
    return [json.dumps({"dlq_format": "part", "request_id": record.get("request_id"), "part": n,
                        "parts": len(slices), "data": part}) for n, part in enumerate(slices, 1)]


def records_from_dead_letters(bodies: list[str], storage: Storage | None = None) -> list[dict[str, Any]]:
    """The log records in dead-letter message bodies (parts joined; incomplete ones left out;
    a reference followed to the bucket, ``storage`` being the log prefix)."""
    records: list[dict[str, Any]] = []
    parts: dict[str, dict[int, str]] = {}
    counts: dict[str, int] = {}
    for body in bodies:
        message = json.loads(body)
        kind = message.get("dlq_format") if isinstance(message, dict) else None
        if kind == "item":
            records.append(from_item(message["item"], storage))
        elif kind == "part":
            rid = str(message["request_id"])
            parts.setdefault(rid, {})[int(message["part"])] = str(message["data"])
            counts[rid] = int(message["parts"])
        else:
            records.append(message)
    for rid, got in parts.items():
        if len(got) == counts[rid]:
            records.append(from_item(json.loads("".join(got[n] for n in sorted(got))), storage))
    return records


class DynamoPredictionLog:
    """Writes log records to DynamoDB; retries, then the SQS dead-letter queue; never raises.

    A record too large for an item (``ITEM_BUDGET``) is first written whole to ``overflow``
    (the data bucket's ``logs/`` prefix) and the item keeps its small fields and the reference.
    When the table fails, the record goes to the dead-letter queue: whole, packed, the
    reference, or in parts (``dead_letters``), so its size never loses it.

    ``on_failure(kind)`` is called with "retry", "dlq" or "lost" so the handler can count
    them in a metric. "lost" means DynamoDB, the bucket and SQS all failed: the record is then
    written whole to the function's log, which CloudWatch keeps, and ``write`` returns False
    so the caller can refuse to hand out a price it could not record.
    """

    def __init__(self, table: Any, sqs: Any, dlq_url: str, *, overflow: Storage | None = None,
                 attempts: int = 3, backoff_s: float = 0.05,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.table = table
        self.sqs = sqs
        self.dlq_url = dlq_url
        self.overflow = overflow
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.on_failure = on_failure or (lambda _kind: None)

    def write(self, record: dict[str, Any]) -> bool:
        """True when the record is stored: in the table (whole or by reference) or the DLQ."""
        from botocore.exceptions import BotoCoreError, ClientError

        errors = (ClientError, BotoCoreError)
        stored = pack_documents(record)
        error: Exception | None = None
        if encoded_size(stored) > ITEM_BUDGET:
            stored, error = self._spill(record, stored)
        if error is None:
            item = _to_dynamo(stored)
            error = with_retries(lambda: self.table.put_item(Item=item), errors, attempts=self.attempts,
                                 backoff_s=self.backoff_s, what="prediction log write",
                                 on_retry=lambda: self.on_failure("retry"))
            if error is None:
                return True
        return self._dead_letter(record, stored, error)

    def _spill(self, record: dict[str, Any], stored: dict[str, Any]) -> tuple[dict[str, Any], Exception | None]:
        """The reference item once the whole record is in the bucket, or the error that kept it out."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.overflow is None:
            return stored, ValueError(f"the record is over {ITEM_BUDGET} bytes and no PREDICTION_LOG_URI is set")
        overflow = self.overflow
        uri: list[str] = []
        error = with_retries(lambda: uri.append(store_whole(overflow, record)),
                             (ClientError, BotoCoreError, OSError), attempts=self.attempts,
                             backoff_s=self.backoff_s, what="prediction log record to the bucket",
                             on_retry=lambda: self.on_failure("retry"))
        if error is not None:
            return stored, error
        logger.info("prediction log record %s is in %s", record.get("request_id"), uri[-1])
        return reference(record, uri[-1]), None

    def _dead_letter(self, record: dict[str, Any], stored: dict[str, Any], error: Exception) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        def send(body: str) -> None:
            self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=body, MessageAttributes={
                "reason": {"DataType": "String", "StringValue": str(error)[:250] or type(error).__name__}})

        bodies = dead_letters(record, stored)
        for body in bodies:
            failed = with_retries(functools.partial(send, body), (ClientError, BotoCoreError), attempts=2,
                                  backoff_s=self.backoff_s, what="prediction log record to the DLQ")
            if failed is not None:  # the last resort is the function's own log
                self.on_failure("lost")
                logger.critical("prediction log record could not be stored (%s); record follows: %s", failed,
                                json.dumps(record, default=str))
                return False
        self.on_failure("dlq")
        logger.error("prediction log record %s sent to the dead-letter queue (%d message(s))",
                     record.get("request_id"), len(bodies))
        return True


def recent_for_caller(table: Any, caller: str, limit: int = 20,
                      storage: Storage | None = None) -> list[dict[str, Any]]:
    """The caller's own most recent log records (GSI by_caller), newest first; a record kept
    in the bucket (``storage``, the log prefix) is read from there."""
    from boto3.dynamodb.conditions import Key

    response = table.query(
        IndexName="by_caller",
        KeyConditionExpression=Key("caller").eq(caller),
        ScanIndexForward=False,
        Limit=max(1, min(limit, 100)),
    )
    return [from_item(i, storage) for i in response.get("Items", [])]
