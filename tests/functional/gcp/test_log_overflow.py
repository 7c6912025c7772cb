"""The Firestore prediction log with its bucket, on the emulators: a record over Firestore's
1 MiB document limit is kept whole in the bucket and referenced; a Firestore outage puts the
record in the bucket instead of only in a log line; the reader gives both back whole."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import pytest

from gemcast.api import log_record
from gemcast.gcp import FirestorePredictionLog, from_document, recent_for_caller
from gemcast.log_overflow import REF_FIELD, record_key
from gemcast.storage import GCSStorage
from gemcast_local.gcp_stack import PROJECT
from gemcast_local.servers import free_port

BUCKET = "gemcast-logs-test"


def record(request_id: str, noise_bytes: int = 0) -> dict[str, Any]:
    request: dict[str, Any] = {"carat": 0.7, "cut": "Ideal"}
    if noise_bytes:
        request["note"] = os.urandom(noise_bytes // 2).hex()
    return log_record(request_id=request_id, caller="user-1", route="POST /v1/predictions", request=request,
                      response={"price": 3307.0}, status=200, model_version="v1", latency_ms=3.0)


@pytest.fixture
def logs(firestore_env: dict[str, str], gcs_env: dict[str, str]) -> GCSStorage:
    from google.cloud import storage  # type: ignore[attr-defined]

    client = storage.Client(project=PROJECT)
    client.create_bucket(BUCKET)
    return GCSStorage(BUCKET, "logs", client=client)


def test_a_record_over_a_mebibyte_is_in_the_bucket_and_read_back_whole(logs: GCSStorage) -> None:
    from google.cloud import firestore

    client = firestore.Client(project=PROJECT)
    log = FirestorePredictionLog(client, "predictions", overflow=logs)
    big = record("req-big", noise_bytes=1_500_000)

    assert log.write(big) is True and log.write(record("req-small")) is True

    doc = client.collection("predictions").document("req-big").get().to_dict()
    assert doc[REF_FIELD] == f"gs://{BUCKET}/logs/{record_key(big)}" and "request" not in doc
    assert doc["caller"] == "user-1" and doc["expire_at"]
    assert json.loads(logs.read_bytes(record_key(big))) == big
    mine = {r["request_id"]: r for r in recent_for_caller(client, "predictions", "user-1", 10, logs)}
    assert mine["req-big"]["request"] == big["request"] and mine["req-small"]["request"]["cut"] == "Ideal"
    assert from_document(doc, logs)["response"] == big["response"]


def test_a_firestore_outage_puts_the_record_in_the_bucket(logs: GCSStorage, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")  # nothing listens there
    emitted: list[Mapping[str, Any]] = []
    failures: list[str] = []
    log = FirestorePredictionLog(firestore.Client(project=PROJECT), "predictions", overflow=logs, backoff_s=0.01,
                                 timeout_s=1, on_failure=failures.append, emit=emitted.append)
    kept = record("req-kept")

    assert log.write(kept) is True

    assert failures == ["retry", "retry", "retry", "bucket"] and log.lost == 0
    (entry,) = emitted
    assert entry["gemcast_event"] == "prediction_log_unindexed" and entry[REF_FIELD].endswith(record_key(kept))
    assert json.loads(logs.read_bytes(record_key(kept))) == kept


def test_the_predict_function_keeps_a_priced_request_over_a_mebibyte_whole(gcp: Any, identity: Any) -> None:
    from gemcast_local.gcp_stack import BUCKET as DATA_BUCKET
    from tests.shared.stack import call_function, gcp_event

    note = os.urandom(700_000).hex()  # 1.4 MB of incompressible text in the body
    stone = json.loads(gcp_event("predict_one_stone")["body"])
    user = identity.user("big@example.com")
    answer = call_function(gcp.url("api"), "predict_one_stone", user["idToken"],
                           body=json.dumps({**stone, "note": note}))

    assert answer.status_code == 200, answer.text
    request_id = answer.json()["request_id"]
    doc = gcp.firestore.collection("predictions").document(request_id).get().to_dict()
    assert doc[REF_FIELD].startswith(f"gs://{DATA_BUCKET}/logs/") and "request" not in doc
    logs = GCSStorage(DATA_BUCKET, "logs", client=gcp.storage)
    (mine,) = recent_for_caller(gcp.firestore, "predictions", user["localId"], 5, logs)
    assert mine["request"]["note"] == note and mine["response"]["price"] == answer.json()["price"]
