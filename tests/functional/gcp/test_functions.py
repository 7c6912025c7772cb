"""Each Cloud Function as deployed: gcp/functions/main.py under functions-framework, driven by
the events/gcp/ fixtures over HTTP, against the Firestore and Cloud Storage emulators, the local
Identity Platform issuer, the serving process (Vertex AI endpoint) and the CustomJob stand-in."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from gemcast.gcp import FirestoreInventory, from_document
from gemcast.ingest import ingest_object
from gemcast.storage import GCSStorage
from gemcast_local.gcp_stack import BUCKET, LocalIdentity, post_cloud_event, storage_event
from tests.shared.fixtures import GcpTestEnv, data_file
from tests.shared.stack import MODEL_VERSION, call_function, gcp_event

DIAMONDS = data_file().read_bytes()
HEADER, *ROWS = DIAMONDS.decode().splitlines()
# 300 good rows and one with an unknown cut, which must land in rejected/ with its reason.
SMALL_BATCH = "\n".join([HEADER, *ROWS[:300], "0.5,Perfect,E,VS1,61.5,55,1500,5.1,5.1,3.2"]) + "\n"


def upload(env: GcpTestEnv, name: str, data: str | bytes) -> int:
    raw = data.encode() if isinstance(data, str) else data
    env.bucket.blob(name).upload_from_string(raw, content_type="text/csv")
    return len(raw)


def inventory_size(env: GcpTestEnv) -> int:
    return int(env.firestore.collection("inventory").count().get()[0][0].value)


def load_inventory(env: GcpTestEnv, csv: str) -> None:
    """Data as ingest_upload leaves it, without a function call (for the other functions' tests)."""
    upload(env, "raw/batch.csv", csv)
    ingest_object(GCSStorage(BUCKET, client=env.storage), "raw/batch.csv",
                  FirestoreInventory(env.firestore, "inventory"))


# -- ingest_upload ---------------------------------------------------------------------------------
def test_ingest_upload_cleans_the_batch_and_loads_the_inventory_once(gcp: GcpTestEnv) -> None:
    size = upload(gcp, "raw/batch.csv", SMALL_BATCH)
    event = storage_event(BUCKET, "raw/batch.csv", size, template=None)

    assert post_cloud_event(gcp.url("ingest_upload"), event) == 200

    curated = gcp.bucket.blob("curated/batch.csv").download_as_text().splitlines()
    rejected_text = gcp.bucket.blob("rejected/batch.jsonl").download_as_text()
    rejected = [json.loads(line) for line in rejected_text.splitlines()]
    assert len(curated) - 1 == inventory_size(gcp) == 300
    assert [r["line"] for r in rejected] == [302]
    assert "cut" in {p["field"] for p in rejected[0]["reasons"]}
    marker = gcp.bucket.blob("curated/_ingested/batch.json").download_as_text()

    # Eventarc delivers at least once: the same event again changes nothing.
    assert post_cloud_event(gcp.url("ingest_upload"), event) == 200
    assert inventory_size(gcp) == 300
    assert gcp.bucket.blob("curated/_ingested/batch.json").download_as_text() == marker


def test_ingest_upload_ignores_objects_outside_raw(gcp: GcpTestEnv) -> None:
    event = gcp_event("ingest_upload_not_raw")
    event["data"]["bucket"] = BUCKET
    gcp.bucket.blob(event["data"]["name"]).upload_from_string(b"{}")

    assert post_cloud_event(gcp.url("ingest_upload"), event) == 200
    assert sorted(b.name for b in gcp.storage.list_blobs(BUCKET)) == [event["data"]["name"]]


# -- trigger_training ------------------------------------------------------------------------------
def test_trigger_training_starts_one_custom_job_per_snapshot(gcp: GcpTestEnv) -> None:
    load_inventory(gcp, SMALL_BATCH)

    first = call_function(gcp.url("trigger_training"), "trigger_training_schedule")
    again = call_function(gcp.url("trigger_training"), "trigger_training_schedule")

    assert first.status_code == again.status_code == 200
    assert first.json()["started"] is True and first.json()["reason"] == "no champion yet"
    assert again.json()["started"] is False and "already started" in again.json()["reason"]
    (job,) = gcp.functions.jobs.jobs.values()
    (pool,) = job.spec["jobSpec"]["workerPoolSpecs"]
    assert pool["containerSpec"]["imageUri"] == "gemcast-training:local"
    assert job.spec["jobSpec"]["serviceAccount"] == "gemcast-training@gemcast-local.iam.gserviceaccount.com"
    assert pool["containerSpec"]["args"] == ["train", "--data", f"gs://{BUCKET}/curated/",
                                             "--registry", f"gs://{BUCKET}/models"]
    assert first.json()["job"]["job_name"] == job.name == again.json()["job"]["job_name"]


def test_trigger_training_without_curated_data_starts_nothing(gcp: GcpTestEnv) -> None:
    answer = call_function(gcp.url("trigger_training"), "trigger_training_schedule")

    assert answer.status_code == 200
    assert answer.json()["started"] is False and answer.json()["reason"] == "no curated data yet"
    assert gcp.functions.jobs.jobs == {}


# -- predict -----------------------------------------------------------------------------------------
def logged(env: GcpTestEnv, timeout_s: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        docs = [from_document(d.to_dict()) for d in env.firestore.collection("predictions").stream()]
        if docs or time.monotonic() > deadline:
            return docs
        time.sleep(0.1)


def test_predict_prices_a_stone_and_logs_it_under_the_token_subject(gcp: GcpTestEnv,
                                                                     identity: LocalIdentity) -> None:
    token = identity.id_token("user-123", email="ana@example.com")

    answer = call_function(gcp.url("predict"), "predict_one_stone", token)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == MODEL_VERSION == answer.headers["X-Model-Version"]
    assert body["price"] == 3000.0 and body["reasons"]  # tiny model: carat <= 1, clarity above SI1
    (record,) = logged(gcp)
    assert record["caller"] == "user-123" and "ana@example.com" not in json.dumps(record)
    assert record["request_id"] == body["request_id"]
    assert record["status"] == 200 and record["route"] == "POST /v1/predictions"
    assert record["request"] == json.loads(gcp_event("predict_one_stone")["body"])
    assert record["response"] == body and record["model_version"] == MODEL_VERSION


@pytest.mark.parametrize("case", ["missing", "foreign key", "expired", "other audience", "not a jwt"])
def test_predict_and_similar_refuse_a_missing_or_bad_token(gcp: GcpTestEnv, identity: LocalIdentity,
                                                           case: str) -> None:
    stranger = LocalIdentity(identity.project)  # same claims, a key the certs URL does not list
    token = {
        "missing": None,
        "foreign key": stranger.id_token("user-123"),
        "expired": identity.id_token("user-123", now=time.time() - 7200),
        "other audience": identity.id_token("user-123", audience="someone-elses-project"),
        "not a jwt": "abc.def",
    }[case]

    for target, fixture in (("predict", "predict_one_stone"), ("similar", "similar_ok")):
        answer = call_function(gcp.url(target), fixture, token)
        assert answer.status_code == 401, (target, answer.text)
        assert answer.json() == {"message": "Unauthorized"}
    assert logged(gcp, timeout_s=0) == []


# -- similar -----------------------------------------------------------------------------------------
def test_similar_returns_the_n_nearest_stones_of_the_same_grades(gcp: GcpTestEnv,
                                                                 identity: LocalIdentity) -> None:
    load_inventory(gcp, SMALL_BATCH)
    query = gcp_event("similar_ok")["query"]

    answer = call_function(gcp.url("similar"), "similar_ok", identity.id_token("user-123"))

    assert answer.status_code == 200, answer.text
    body = answer.json()
    same = [r.split(",") for r in ROWS[:300]]
    same = [r for r in same if (r[1], r[2], r[3]) == (query["cut"], query["color"], query["clarity"])]
    expected = sorted(abs(float(r[0]) - 0.7) for r in same)[:3]
    assert body["count"] == len(body["stones"]) == min(3, len(same))
    assert [abs(s["carat"] - 0.7) for s in body["stones"]] == pytest.approx(expected)
    assert {(s["cut"], s["color"], s["clarity"]) for s in body["stones"]} == {("Ideal", "E", "VS1")}


def test_similar_names_an_unknown_category(gcp: GcpTestEnv, identity: LocalIdentity) -> None:
    answer = call_function(gcp.url("similar"), "similar_unknown_category", identity.id_token("user-123"))

    assert answer.status_code == 400
    assert set(answer.json()["error"]["fields"]) == {"cut"}


# -- Identity Platform blocking functions -------------------------------------------------------------
def blocking(env: GcpTestEnv, identity: LocalIdentity, target: str, fixture: str) -> Any:
    claims = gcp_event(fixture)
    token = identity.blocking_token(claims["event_type"], claims["user_record"])
    request = {"method": "POST", "headers": {"Content-Type": "application/json"},
               "body": json.dumps({"data": {"jwt": token}})}
    return call_function(env.functions.url(target), request)


def test_before_create_admits_allowed_domains_with_the_default_tier(gcp_functions: Any,
                                                                    identity: LocalIdentity) -> None:
    env = GcpTestEnv(gcp_functions, None, None, None)

    allowed = blocking(env, identity, "before_create", "before_create_allowed")
    denied = blocking(env, identity, "before_create", "before_create_denied")

    assert allowed.status_code == 200
    assert allowed.json() == {"userRecord": {"customClaims": {"tier": "standard"},
                                             "updateMask": "customClaims"}}
    assert denied.status_code == 403
    assert denied.json()["error"]["status"] == "PERMISSION_DENIED"
    assert "elsewhere.org" in denied.json()["error"]["message"]


def test_before_sign_in_puts_the_tier_claim_in_the_token(gcp_functions: Any, identity: LocalIdentity) -> None:
    env = GcpTestEnv(gcp_functions, None, None, None)

    default = blocking(env, identity, "before_sign_in", "before_sign_in_default_tier")
    premium = blocking(env, identity, "before_sign_in", "before_sign_in_premium")

    assert default.json()["userRecord"]["sessionClaims"] == {"tier": "standard"}
    assert premium.json()["userRecord"]["sessionClaims"] == {"tier": "premium"}


def test_blocking_functions_refuse_a_token_not_from_identity_platform(gcp_functions: Any,
                                                                     identity: LocalIdentity) -> None:
    env = GcpTestEnv(gcp_functions, None, None, None)
    stranger = LocalIdentity(identity.project)
    claims = gcp_event("before_create_allowed")
    forged = stranger.blocking_token("beforeCreate", claims["user_record"])
    wrong_event = identity.blocking_token("beforeSignIn", claims["user_record"])

    for token, status in ((forged, 401), (wrong_event, 400)):
        answer = call_function(env.functions.url("before_create"), {
            "method": "POST", "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"data": {"jwt": token}})})
        assert answer.status_code == status, answer.text
        assert "userRecord" not in answer.json()
