"""Fault drills of the prediction log, through the running local stack: moto paused (SIGSTOP)
or stopped while stones are priced, the log table gone, the dead-letter queue gone.

Each drill checks what a client and an operator rely on: every request gets a clear status;
a price is handed out only when its record is kept (in the table, the bucket or the DLQ) and
findable there; and the stack keeps running and recovers once the store is back.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from gemcast.aws import from_item, records_from_dead_letters
from gemcast.log_overflow import LOG_PREFIX
from gemcast.schema import EXAMPLE_STONE
from gemcast.storage import S3Storage
from gemcast_local.provision import local_name, provision
from gemcast_local.stack import LocalStack
from gemcast_local.template import dynamodb_tables, sqs_queues
from tests.fuzz.conftest import plain_item

pytestmark = pytest.mark.e2e

UNRECORDED = "the prediction log is unavailable"


def price(api_url: str, token: str, body: Any = EXAMPLE_STONE) -> requests.Response:
    return requests.post(f"{api_url}/v1/predictions", json=body, headers={"Authorization": token}, timeout=90)


def findable(stack: LocalStack, request_id: str) -> dict[str, Any] | None:
    """The record of a request wherever the log put it: the table (whole or by reference to the
    bucket), or the dead-letter queue."""
    got = stack.client("dynamodb").get_item(TableName=stack.values["PredictionLogTable"],
                                            Key={"request_id": {"S": request_id}}).get("Item")
    if got:
        return from_item(plain_item(got), log_bucket(stack))
    for record in dead_letters(stack):
        if record.get("request_id") == request_id:
            return record
    return None


def dead_letters(stack: LocalStack) -> list[dict[str, Any]]:
    sqs = stack.client("sqs")
    bodies: list[str] = []
    for _ in range(20):
        got = sqs.receive_message(QueueUrl=stack.values["PredictionLogDLQ"], MaxNumberOfMessages=10,
                                  VisibilityTimeout=0, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            break
        bodies.extend(m["Body"] for m in got)
    return records_from_dead_letters(list(dict.fromkeys(bodies)), log_bucket(stack))


def log_bucket(stack: LocalStack) -> S3Storage:
    return S3Storage(stack.bucket, LOG_PREFIX, client=stack.client("s3"))


def check_answer(stack: LocalStack, response: requests.Response) -> str:
    """A clear status: 200 with its record findable, or 503 saying why with Retry-After."""
    body = response.json()
    if response.status_code == 200:
        record = findable(stack, body["request_id"])
        assert record is not None, f"priced but not recorded: {body['request_id']}"
        assert record["response"]["price"] == body["price"]
        return "priced"
    assert response.status_code == 503, response.text
    assert UNRECORDED in body["error"]["message"] and response.headers["Retry-After"]
    assert "price" not in body
    return "refused"


@pytest.fixture
def moto_paused(stack: LocalStack) -> Iterator[Any]:
    assert stack.moto is not None and stack.moto.pid
    pgid = stack.moto.pid

    def pause_for(seconds: float) -> threading.Timer:
        os.killpg(pgid, signal.SIGSTOP)
        timer = threading.Timer(seconds, os.killpg, (pgid, signal.SIGCONT))
        timer.start()
        return timer

    try:
        yield pause_for
    finally:
        os.killpg(pgid, signal.SIGCONT)


def test_a_short_pause_of_moto_costs_a_retry_and_loses_nothing(
        stack: LocalStack, api_url: str, id_token: str, moto_paused: Any) -> None:
    timer = moto_paused(2.5)
    answer = price(api_url, id_token)
    timer.join()
    assert answer.status_code == 200, answer.text
    assert check_answer(stack, answer) == "priced"


def test_a_long_pause_of_moto_refuses_prices_clearly_and_then_recovers(
        stack: LocalStack, api_url: str, id_token: str, moto_paused: Any) -> None:
    timer = moto_paused(90)  # a safety net: moto is resumed below once every client has its answer
    answers: list[requests.Response] = []
    clients = [threading.Thread(target=lambda: answers.append(price(api_url, id_token))) for _ in range(2)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    timer.cancel()
    assert stack.moto is not None and stack.moto.pid
    os.killpg(stack.moto.pid, signal.SIGCONT)
    # Paused all along: nothing could be recorded, so no price was handed out, and each said why.
    assert [check_answer(stack, a) for a in answers] == ["refused", "refused"]
    assert check_answer(stack, price(api_url, id_token)) == "priced"


def test_a_priced_request_too_large_for_an_item_is_in_the_bucket_and_in_my_requests(
        stack: LocalStack, api_url: str, id_token: str) -> None:
    note = os.urandom(300_000).hex()  # incompressible: 600 KB even packed
    answer = price(api_url, id_token, {**EXAMPLE_STONE, "note": note})
    assert answer.status_code == 200, answer.text
    request_id = answer.json()["request_id"]
    item = plain_item(stack.client("dynamodb").get_item(
        TableName=stack.values["PredictionLogTable"], Key={"request_id": {"S": request_id}})["Item"])
    assert item["record_uri"] == f"s3://{stack.bucket}/logs/{item['created_at'][:10]}/{request_id}.json"
    assert "request" not in item and item["status"] == 200
    mine = requests.get(f"{api_url}/v1/predictions/mine", params={"limit": 5},
                        headers={"Authorization": id_token}, timeout=30)
    assert mine.status_code == 200
    (record,) = [r for r in mine.json()["predictions"] if r["request_id"] == request_id]
    assert record["request"]["note"] == note and record["response"]["price"] == answer.json()["price"]


def _delete_table(stack: LocalStack) -> None:
    stack.client("dynamodb").delete_table(TableName=stack.values["PredictionLogTable"])


def _restore_table(stack: LocalStack) -> None:
    (kwargs,) = [kw for kw in dynamodb_tables(stack.template, name=local_name)
                 if kw["TableName"] == stack.values["PredictionLogTable"]]
    stack.client("dynamodb").create_table(**kwargs)


def test_without_the_table_records_of_any_size_go_to_the_bucket_and_the_dlq(
        stack: LocalStack, api_url: str, id_token: str) -> None:
    _delete_table(stack)
    try:
        small = price(api_url, id_token)
        large = price(api_url, id_token, {**EXAMPLE_STONE, "note": os.urandom(300_000).hex()})
        assert small.status_code == 200 and large.status_code == 200, large.text
        kept = {r["request_id"]: r for r in dead_letters(stack)}
        assert kept[small.json()["request_id"]]["response"]["price"] == small.json()["price"]
        whole = kept[large.json()["request_id"]]
        assert len(whole["request"]["note"]) == 600_000 and whole["record_uri"].startswith(f"s3://{stack.bucket}/logs/")
    finally:
        _restore_table(stack)
    assert check_answer(stack, price(api_url, id_token)) == "priced"


def test_without_table_and_dlq_no_price_is_handed_out_and_it_recovers(
        stack: LocalStack, api_url: str, id_token: str) -> None:
    sqs = stack.client("sqs")
    _delete_table(stack)
    sqs.delete_queue(QueueUrl=stack.values["PredictionLogDLQ"])
    try:
        answer = price(api_url, id_token)
        assert check_answer(stack, answer) == "refused"
        assert requests.get(f"{api_url}/v1/health", timeout=10).status_code == 200  # the stack keeps running
    finally:
        _restore_table(stack)
        (kwargs,) = [kw for kw in sqs_queues(stack.template, name=local_name)
                     if kw["QueueName"] == local_name("PredictionLogDLQ")]
        sqs.create_queue(**kwargs)
    assert check_answer(stack, price(api_url, id_token)) == "priced"


def test_with_moto_stopped_prices_are_refused_at_once_and_come_back_with_it(
        stack: LocalStack, api_url: str, id_token: str) -> None:
    """Last in the package: moto forgets everything when stopped, so the drill recreates the
    template's resources on the restarted server (the user pool too, whose signing keys the
    gateway has cached), as an operator would."""
    assert stack.moto is not None
    assert check_answer(stack, price(api_url, id_token)) == "priced"  # and the gateway holds the pool's keys
    stack.moto.stop()
    try:
        started = time.monotonic()
        answer = price(api_url, id_token)
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        assert UNRECORDED in answer.json()["error"]["message"] and time.monotonic() - started < 20
    finally:
        stack.moto.start()
        provision(stack.template, stack.client, stack.config.region, stack.config.parameters)
    assert check_answer(stack, price(api_url, id_token)) == "priced"
