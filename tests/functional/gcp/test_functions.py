"""Each Cloud Function as deployed: gcp/functions/main.py under functions-framework, driven by
the events/gcp/ fixtures over HTTP, against the Firestore, Cloud Storage and Firebase Auth
emulators, the serving process (Vertex AI endpoint) and the CustomJob stand-in. The Auth
emulator calls the blocking functions on sign-up and sign-in, as Identity Platform does."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from gemcast.gcp import FirestoreInventory, from_document
from gemcast.ingest import ingest_object
from gemcast.storage import GCSStorage
from gemcast_local.gcp_stack import BUCKET, IdentityError, post_cloud_event, storage_event
from tests.shared.fixtures import GcpTestEnv, Identity, data_file
from tests.shared.signing import SigningKey
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


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def unsigned(claims: dict[str, Any]) -> str:
    """A token shaped like the emulator's (alg none) with other claims: what a forger sends."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_predict_prices_a_stone_and_logs_it_under_the_token_subject(gcp: GcpTestEnv,
                                                                     identity: Identity) -> None:
    user = identity.user("ana@example.com")

    answer = call_function(gcp.url("api"), "predict_one_stone", user["idToken"])

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == MODEL_VERSION == answer.headers["X-Model-Version"]
    assert body["price"] == 3000.0 and body["reasons"]  # tiny model: carat <= 1, clarity above SI1
    (record,) = logged(gcp)
    assert record["caller"] == user["localId"] and "ana@example.com" not in json.dumps(record)
    assert record["request_id"] == body["request_id"]
    assert record["status"] == 200 and record["route"] == "POST /v1/predictions"
    assert record["request"] == json.loads(gcp_event("predict_one_stone")["body"])
    assert record["response"] == body and record["model_version"] == MODEL_VERSION


@pytest.mark.parametrize("case", ["missing", "signed by a stranger", "expired", "other audience",
                                  "other issuer", "not a jwt"])
def test_the_api_refuses_a_missing_or_bad_token(gcp: GcpTestEnv, identity: Identity, case: str) -> None:
    good = claims_of(identity.id_token())
    stranger = SigningKey(identity.project, serve=False)
    token = {
        "missing": None,
        "signed by a stranger": stranger.id_token(good["sub"]),
        "expired": unsigned({**good, "iat": good["iat"] - 7200, "exp": good["iat"] - 3600}),
        "other audience": unsigned({**good, "aud": "someone-elses-project"}),
        "other issuer": unsigned({**good, "iss": "https://securetoken.google.com/someone-else"}),
        "not a jwt": "abc.def",
    }[case]

    for fixture in ("predict_one_stone", "similar_ok"):
        answer = call_function(gcp.url("api"), fixture, token)
        assert answer.status_code == 401, (fixture, answer.text)
        body = answer.json()
        assert body["error"]["fields"] == {"Authorization": "missing, expired or not an ID token of this API"}
        assert body["request_id"] and answer.headers["WWW-Authenticate"] == "Bearer"
    assert logged(gcp, timeout_s=0) == []


def test_the_api_routes_by_path_and_names_what_it_does_not_serve(gcp: GcpTestEnv) -> None:
    assert call_function(gcp.url("api"), {"method": "GET", "path": "/v1/health"}).json() == {"status": "ok"}
    unknown = call_function(gcp.url("api"), {"method": "GET", "path": "/v1/nothing"})
    wrong_method = call_function(gcp.url("api"), {"method": "DELETE", "path": "/v1/predictions"})

    assert unknown.status_code == 404 and "GET /v1/nothing" in unknown.json()["error"]["message"]
    assert wrong_method.status_code == 405


# -- similar -----------------------------------------------------------------------------------------
def test_similar_returns_the_n_nearest_stones_of_the_same_grades(gcp: GcpTestEnv, identity: Identity) -> None:
    load_inventory(gcp, SMALL_BATCH)
    query = gcp_event("similar_ok")["query"]

    answer = call_function(gcp.url("api"), "similar_ok", identity.id_token())

    assert answer.status_code == 200, answer.text
    body = answer.json()
    same = [r.split(",") for r in ROWS[:300]]
    same = [r for r in same if (r[1], r[2], r[3]) == (query["cut"], query["color"], query["clarity"])]
    expected = sorted(abs(float(r[0]) - 0.7) for r in same)[:3]
    assert body["count"] == len(body["stones"]) == min(3, len(same))
    assert [abs(s["carat"] - 0.7) for s in body["stones"]] == pytest.approx(expected)
    assert {(s["cut"], s["color"], s["clarity"]) for s in body["stones"]} == {("Ideal", "E", "VS1")}
    (record,) = logged(gcp)  # logged like predictions, as on AWS
    assert record["route"] == "GET /v1/diamonds/similar" and record["request"] == {"query": query}


def test_similar_names_an_unknown_category(gcp: GcpTestEnv, identity: Identity) -> None:
    answer = call_function(gcp.url("api"), "similar_unknown_category", identity.id_token())

    assert answer.status_code == 400
    assert set(answer.json()["error"]["fields"]) == {"cut"}


# -- Identity Platform blocking functions, called by the Auth emulator --------------------------------
def test_sign_up_runs_before_create_which_gives_the_default_tier(gcp: GcpTestEnv, identity: Identity) -> None:
    token = identity.id_token(f"new-{time.monotonic_ns()}@example.com")

    assert claims_of(token)["tier"] == "standard"


def test_before_create_refuses_a_domain_outside_the_allowed_ones(gcp: GcpTestEnv, identity: Identity) -> None:
    with pytest.raises(IdentityError) as refused:
        identity.emulator.sign_up(f"someone-{time.monotonic_ns()}@elsewhere.org", "Parity-Test-2024")

    assert "PERMISSION_DENIED" in str(refused.value) and "elsewhere.org" in str(refused.value)


def test_before_sign_in_puts_the_users_own_tier_in_the_token(gcp: GcpTestEnv, identity: Identity) -> None:
    email = f"premium-{time.monotonic_ns()}@example.com"
    user = identity.user(email)
    identity.emulator.set_custom_claims(user["localId"], {"tier": "premium"})

    assert claims_of(identity.id_token(email))["tier"] == "premium"


def test_blocking_functions_refuse_a_token_not_from_identity_platform(gcp_functions: Any) -> None:
    claims = gcp_event("before_create_allowed")
    moment = int(time.time())
    base = {"iss": "https://securetoken.google.com/demo-gemcast-local", "aud": gcp_functions.url("before_create"),
            "iat": moment, "exp": moment + 60, "sub": claims["user_record"]["uid"],
            "user_record": claims["user_record"]}
    signed = SigningKey("demo-gemcast-local", serve=False).blocking_token("beforeCreate", claims["user_record"])
    cases = {
        "signed by a stranger": (signed, 401),
        "other issuer": (unsigned({**base, "event_type": "beforeCreate", "iss": "https://example.org"}), 401),
        "other event": (unsigned({**base, "event_type": "beforeSignIn"}), 400),
    }

    for name, (token, status) in cases.items():
        answer = call_function(gcp_functions.url("before_create"), {
            "method": "POST", "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"data": {"jwt": token}})})
        assert answer.status_code == status, (name, answer.text)
        assert "userRecord" not in answer.json()
