"""AWS adapters of the cloud-neutral parts: the SageMaker endpoint client and the DynamoDB
prediction log (with its SQS dead-letter queue). boto3 only; clients come in from the
caller, created once per Lambda container.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from gemcast.api import pack_documents, unpack_documents
from gemcast.errors import EndpointError

logger = logging.getLogger(__name__)



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


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item back into a log record."""
    out: dict[str, Any] = {}
    for k, v in item.items():
        if isinstance(v, Decimal):
            v = int(v) if v == v.to_integral_value() and k != "latency_ms" else float(v)
        out[k] = v
    return unpack_documents(out)


class DynamoPredictionLog:
    """Writes log records to DynamoDB; retries, then the SQS dead-letter queue; never raises.

    ``on_failure(kind)`` is called with "retry", "dlq" or "lost" so the handler can count
    them in a metric. "lost" means both DynamoDB and SQS failed: the record is then written
    whole to the function's log, which CloudWatch keeps, so it can still be replayed.
    """

    def __init__(self, table: Any, sqs: Any, dlq_url: str, *, attempts: int = 3, backoff_s: float = 0.05,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.table = table
        self.sqs = sqs
        self.dlq_url = dlq_url
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.on_failure = on_failure or (lambda _kind: None)

    def write(self, record: dict[str, Any]) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        item = to_item(record)
        error: Exception | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self.table.put_item(Item=item)
                return True
            except (ClientError, BotoCoreError) as exc:
                error = exc
                self.on_failure("retry")
                logger.warning("prediction log write %d/%d failed: %s", attempt, self.attempts, exc)
                if attempt < self.attempts:
                    time.sleep(self.backoff_s * (2 ** (attempt - 1)))
        try:
            self.sqs.send_message(
                QueueUrl=self.dlq_url,
                MessageBody=json.dumps(record, default=str),
                MessageAttributes={"reason": {"DataType": "String", "StringValue": str(error)[:250]}},
            )
            self.on_failure("dlq")
            logger.error("prediction log record %s sent to the dead-letter queue", record.get("request_id"))
        except (ClientError, BotoCoreError) as exc:  # the last resort is the function's own log
            self.on_failure("lost")
            logger.critical("prediction log record could not be stored (%s); record follows: %s", exc,
                            json.dumps(record, default=str))
        return False


def recent_for_caller(table: Any, caller: str, limit: int = 20) -> list[dict[str, Any]]:
    """The caller's own most recent log records (GSI by_caller), newest first."""
    from boto3.dynamodb.conditions import Key

    response = table.query(
        IndexName="by_caller",
        KeyConditionExpression=Key("caller").eq(caller),
        ScanIndexForward=False,
        Limit=max(1, min(limit, 100)),
    )
    return [from_item(i) for i in response.get("Items", [])]
