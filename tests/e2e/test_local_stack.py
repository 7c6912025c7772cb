"""The local stack as a user meets it: `gemcast-local up`'s runner on free ports, Cognito sign-in, HTTP.

Started in process (the same LocalStack that `gemcast-local up` runs), with a linear model so the
start takes seconds; every request goes over HTTP through the local gateway, its authorizer
and the functions' own handlers.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from gemcast.aws import from_item
from gemcast.schema import EXAMPLE_STONE
from gemcast_local.servers import free_port
from gemcast_local.stack import LocalStack, StackConfig, token

pytestmark = pytest.mark.e2e

STONE = EXAMPLE_STONE
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    state = tmp_path_factory.mktemp("state") / ".gemcast"
    config = StackConfig(
        state_dir=state, api_port=free_port(), serve_port=free_port(), web_port=free_port(), kind="linear",
        serve_workers=1,
    )
    with LocalStack(config, say=lambda _msg: None) as running:
        yield running


@pytest.fixture(scope="module")
def id_token(stack: LocalStack) -> str:
    cognito = stack.client("cognito-idp")
    answer = cognito.initiate_auth(
        ClientId=stack.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": stack.config.demo_email, "PASSWORD": stack.config.demo_password},
    )
    return str(answer["AuthenticationResult"]["IdToken"])


def api(stack: LocalStack, method: str, path: str, token: str | None, body: Any = None) -> requests.Response:
    assert stack.gateway is not None
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    return requests.request(
        method,
        stack.gateway.url + path,
        headers=headers,
        timeout=30,
        data=None if body is None else json.dumps(body),
    )


def log_record(stack: LocalStack, request_id: str) -> dict[str, Any] | None:
    table = stack.client("dynamodb")
    item = table.get_item(TableName=stack.values["PredictionLogTable"], Key={"request_id": {"S": request_id}})
    if "Item" not in item:
        return None
    from boto3.dynamodb.types import TypeDeserializer

    plain = {k: TypeDeserializer().deserialize(v) for k, v in item["Item"].items()}
    return from_item(plain)


def test_price_a_stone_and_find_similar_ones_both_logged(stack: LocalStack, id_token: str) -> None:
    priced = api(stack, "POST", "/v1/predictions", id_token, STONE)
    assert priced.status_code == 200, priced.text
    body = priced.json()
    assert 1000 < body["price"] < 10000 and body["reasons"]
    similar = api(stack, "GET", "/v1/diamonds/similar?carat=0.7&cut=Ideal&color=E&clarity=VS1&n=5", id_token)
    assert similar.status_code == 200, similar.text
    stones = similar.json()["stones"]
    assert len(stones) == 5 and all(s["cut"] == "Ideal" and s["clarity"] == "VS1" for s in stones)

    sub = jwt.decode(id_token, options={"verify_signature": False})["sub"]
    for response, route in ((priced, "POST /v1/predictions"), (similar, "GET /v1/diamonds/similar")):
        record = log_record(stack, response.headers["x-amzn-RequestId"])
        assert record is not None, route
        assert record["route"] == route and record["caller"] == sub and record["status"] == 200
    assert log_record(stack, body["request_id"])["response"]["price"] == body["price"]  # type: ignore[index]


def test_no_token_or_a_forged_one_is_a_401(stack: LocalStack, id_token: str) -> None:
    assert api(stack, "POST", "/v1/predictions", None, STONE).status_code == 401
    # Same header and claims, signed by a key that is not the pool's.
    header = jwt.get_unverified_header(id_token)
    claims = jwt.decode(id_token, options={"verify_signature": False})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, key, algorithm="RS256", headers={"kid": header["kid"]})
    answer = api(stack, "POST", "/v1/predictions", forged, STONE)
    assert answer.status_code == 401 and "Unauthorized" in answer.json()["error"]["message"]
    assert answer.json()["error"]["fields"] == {"Authorization": "missing, expired or not an ID token of this API"}
    # The pool's signature over other claims (another caller) is refused too.
    head, payload, signature = id_token.split(".")
    other = (
        base64.urlsafe_b64encode(json.dumps({**claims, "sub": "someone-else"}).encode()).rstrip(b"=").decode()
    )
    assert api(stack, "GET", "/v1/predictions/mine", f"{head}.{other}.{signature}").status_code == 401
    # Health and the OpenAPI document need no token.
    assert api(stack, "GET", "/v1/health", None).status_code == 200
    assert api(stack, "GET", "/v1/openapi.json", None).json()["openapi"].startswith("3.")


def test_a_bad_stone_is_a_400_with_field_names(stack: LocalStack, id_token: str) -> None:
    answer = api(stack, "POST", "/v1/predictions", id_token, {**STONE, "carat": 60, "color": "Q"})
    assert answer.status_code == 400
    assert {"carat", "color"} <= set(answer.json()["error"]["fields"])
    # "²" is a digit to str.isdigit, not to int(): a clear 400 naming the field, not a 502.
    mine = api(stack, "GET", "/v1/predictions/mine?limit=%C2%B2", id_token)
    assert mine.status_code == 400 and "limit" in mine.json()["error"]["fields"]


def test_the_printed_commands_work_as_printed(stack: LocalStack) -> None:
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("curl or bash not on PATH")
    lines = [line.strip() for line in stack.banner().splitlines()]
    token_line = next(line for line in lines if line.startswith("TOKEN=$("))
    curl_line = next(line for line in lines if line.startswith("curl -s -X POST"))
    done = subprocess.run(
        ["bash", "-c", f"{token_line} && {curl_line}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["price"] > 0
    assert token(stack.state_dir)  # what `gemcast-local token` prints


def test_a_stopped_endpoint_is_a_503_and_still_logged(stack: LocalStack, id_token: str) -> None:
    assert stack.serving is not None
    stack.serving.stop()
    try:
        answer = api(stack, "POST", "/v1/predictions", id_token, STONE)
        assert answer.status_code == 503
        assert "unavailable" in answer.json()["error"]["message"]
        record = log_record(stack, answer.json()["request_id"])
        assert record is not None and record["status"] == 503
    finally:
        stack.serving.start()  # same port: the proxy's client keeps working
    assert api(stack, "POST", "/v1/predictions", id_token, STONE).status_code == 200


def test_state_file_names_the_running_stack(stack: LocalStack) -> None:
    state = json.loads((stack.state_dir / "stack.json").read_text())
    assert state["api_url"] == stack.gateway.url  # type: ignore[union-attr]
    assert state["resources"]["PredictionLogTable"] == stack.values["PredictionLogTable"]
    assert Path(state["logs"]).is_dir()


def test_a_new_batch_under_raw_is_ingested_and_a_new_champion_is_deployed(
    stack: LocalStack, id_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template's S3 notifications, played by the running stack: raw/ -> preprocess, and
    models/champion.json -> the endpoint serves the new champion."""
    s3 = stack.client("s3")
    lines = (REPO / "data" / "diamonds.csv").read_text().splitlines(keepends=True)
    s3.put_object(Bucket=stack.bucket, Key="raw/more stones.csv", Body="".join(lines[:1] + lines[1:300]))
    stack.watch_bucket(wait=True)
    curated = s3.get_object(Bucket=stack.bucket, Key="curated/more stones.csv")["Body"].read().decode()
    assert curated.startswith("carat,cut,color,clarity") and curated.count("\n") > 250

    from gemcast.registry import Registry

    for name, value in stack.aws_env.items():
        monkeypatch.setenv(name, value)
    registry = Registry(stack.registry_uri)
    before = registry.champion()["version"]
    rows = registry.history()
    other = next((r["version"] for r in rows if r["version"] != before), None)
    if other is None:  # one model so far: publish a copy of it under a new version
        from gemcast.registry import ModelPackage, new_version

        manifest = registry.manifest(before)
        files = {name: registry.read_file(before, name) for name in manifest["files"]}
        other = registry.publish(ModelPackage(files, {**manifest, "version": new_version()}))
    registry.promote(other, reason="test: a new champion")
    stack.watch_bucket()
    assert stack.serving is not None
    health = requests.get(f"{stack.serving.url}/ping", timeout=5).json()
    assert health["model_version"] == other
    answer = api(stack, "POST", "/v1/predictions", id_token, STONE)
    assert answer.status_code == 200 and answer.json()["model_version"] == other


# ----------------------------------------------------------------------------- fault drills


def test_drill_a_killed_model_server_is_a_503_logged_and_restarted_by_itself(
    stack: LocalStack, id_token: str
) -> None:
    assert stack.serving is not None and stack.serving.pid is not None
    os.killpg(stack.serving.pid, signal.SIGKILL)
    stack.serving._proc.wait(timeout=10)  # type: ignore[union-attr]
    answer = api(stack, "POST", "/v1/predictions", id_token, STONE)
    assert answer.status_code == 503
    assert log_record(stack, answer.json()["request_id"]) is not None  # no record lost
    stack.tick()  # what `gemcast-local up` does every second
    assert "serving at" in stack.status["serve"]
    assert api(stack, "POST", "/v1/predictions", id_token, STONE).status_code == 200


@pytest.mark.parametrize("pointer", [b"{not json", b'{"version": "19990101T000000Z-missing"}'])
def test_drill_a_corrupt_champion_or_a_missing_version_never_replaces_the_serving_one(
    stack: LocalStack, id_token: str, pointer: bytes
) -> None:
    s3 = stack.client("s3")
    good = s3.get_object(Bucket=stack.bucket, Key="models/champion.json")["Body"].read()
    serving = stack.serving
    try:
        s3.put_object(Bucket=stack.bucket, Key="models/champion.json", Body=pointer)
        stack.tick()
        assert stack.serving is serving and "redeploy refused" in stack.status["serve"]
        answer = api(stack, "POST", "/v1/predictions", id_token, STONE)
        assert answer.status_code == 200  # still the previous model
        assert log_record(stack, answer.json()["request_id"]) is not None
    finally:
        s3.put_object(Bucket=stack.bucket, Key="models/champion.json", Body=good)
    stack.tick()  # the good pointer again: deployed
    assert "serving at" in stack.status["serve"]
    assert api(stack, "POST", "/v1/predictions", id_token, STONE).status_code == 200


def test_drill_a_paused_moto_is_waited_out_and_no_record_is_lost(stack: LocalStack, id_token: str) -> None:
    assert stack.moto is not None and stack.moto.pid is not None
    answers: list[requests.Response] = []
    os.kill(stack.moto.pid, signal.SIGSTOP)
    try:
        client = threading.Thread(target=lambda: answers.append(api(stack, "POST", "/v1/predictions", id_token,
                                                                   STONE)))
        client.start()
        client.join(timeout=2)  # the log write waits for moto
    finally:
        os.kill(stack.moto.pid, signal.SIGCONT)
    client.join(timeout=60)
    stack.tick()  # the player carries on
    assert answers and answers[0].status_code == 200
    assert log_record(stack, answers[0].json()["request_id"]) is not None
    assert stack.moto.alive


def test_the_api_keeps_answering_while_a_batch_is_ingested(stack: LocalStack, id_token: str) -> None:
    """The notification player runs preprocess in its own process: serving never waits for it."""
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.bucket, Key="raw/large.csv", Body=(REPO / "data" / "diamonds_large.csv").read_bytes())
    stack.watch_bucket()  # returns at once; the batch is cleaned and loaded in the background
    answered = [api(stack, "GET", "/v1/health", None).status_code for _ in range(5)]
    assert answered == [200] * 5 and stack._ingest_jobs and not stack._ingest_jobs[0].done()
    stack.watch_bucket(wait=True)
    assert stack.status["ingest"] == "raw/large.csv: ingested"
