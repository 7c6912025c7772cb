"""The stand-in servers: real clients work through them, and stopping leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest

from gemcast_local.servers import (
    EMULATOR_JAVA_OPTIONS,
    FirestoreEmulator,
    GcsEmulator,
    MotoServer,
    ServerGroup,
    ServerStartError,
    StandInServer,
    gcloud_unavailable_reason,
    group_members,
    linear_item_size_check,
)

REPO = Path(__file__).resolve().parents[2]
needs_gcloud = pytest.mark.skipif(
    gcloud_unavailable_reason() is not None, reason=str(gcloud_unavailable_reason())
)


def _wait_until_gone(pgid: int, timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return group_members(pgid)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


# -- moto ---------------------------------------------------------------------------------------
def test_boto3_s3_dynamodb_sqs_work_through_moto(aws_env: dict[str, str]) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="gemcast-data")
    s3.put_object(Bucket="gemcast-data", Key="raw/batch.csv", Body=b"carat,cut\n0.3,Ideal\n")
    assert s3.get_object(Bucket="gemcast-data", Key="raw/batch.csv")["Body"].read().startswith(b"carat")

    ddb = boto3.client("dynamodb")
    ddb.create_table(
        TableName="predictions",
        KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName="predictions", Item={"request_id": {"S": "r1"}, "price": {"N": "512"}})
    item = ddb.get_item(TableName="predictions", Key={"request_id": {"S": "r1"}})["Item"]
    assert item["price"] == {"N": "512"}

    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="log-dlq")["QueueUrl"]
    sqs.send_message(QueueUrl=queue_url, MessageBody="hello")
    messages = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)["Messages"]
    assert [m["Body"] for m in messages] == ["hello"]


def test_moto_cognito_tokens_verify_against_the_served_jwks(
    aws_env: dict[str, str], moto_server: MotoServer
) -> None:
    idp = boto3.client("cognito-idp")
    pool_id = idp.create_user_pool(PoolName="gemcast-users")["UserPool"]["Id"]
    client_id = idp.create_user_pool_client(
        UserPoolId=pool_id, ClientName="web", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    idp.admin_create_user(UserPoolId=pool_id, Username="demo", TemporaryPassword="Temp-pass-1!")
    idp.admin_set_user_password(UserPoolId=pool_id, Username="demo", Password="Demo-pass-1!", Permanent=True)

    tokens = idp.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "demo", "PASSWORD": "Demo-pass-1!"},
    )["AuthenticationResult"]

    assert jwt.get_unverified_header(tokens["IdToken"])["alg"] == "RS256"
    signing_key = jwt.PyJWKClient(moto_server.jwks_url(pool_id)).get_signing_key_from_jwt(tokens["IdToken"])
    claims = jwt.decode(tokens["IdToken"], signing_key.key, algorithms=["RS256"], audience=client_id)
    assert claims["cognito:username"] == "demo"
    assert claims["iss"].endswith(pool_id)


def test_moto_reset_forgets_every_resource(aws_env: dict[str, str], moto_server: MotoServer) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="left-over")
    moto_server.reset()
    assert s3.list_buckets()["Buckets"] == []


ITEMS = [
    {"stone_group": {"S": "Ideal#E#VS1"}, "carat_key": {"S": "0000.5000#ab"}, "carat": {"N": "0.5"},
     "tags": {"SS": ["a", "b"]}, "dims": {"L": [{"N": "1"}, {"M": {"x": {"N": "3.95"}, "b": {"BOOL": True}}}]},
     "blob": {"B": b"\x00\x01"}, "none": {"NULL": True}},
    # Each side of moto's limit on one item's size, 405,000 bytes (keys 25, the rest "big").
    {"stone_group": {"S": "g"}, "carat_key": {"S": "k"}, "big": {"S": "x" * (405_000 - 25)}},
    {"stone_group": {"S": "g"}, "carat_key": {"S": "k"}, "big": {"S": "x" * (405_000 - 25 + 1)}},
    {"stone_group": {"S": "g"}, "carat_key": {"S": "k"}, "a": {"S": "x" * 300_000}, "b": {"S": "y" * 300_000}},
]


def _moto_item(attrs: dict[str, Any]) -> Any:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    try:
        item = Item(DynamoType(attrs["stone_group"]), DynamoType(attrs["carat_key"]), attrs)
    except ItemSizeTooLarge as exc:
        return ("too large", str(exc))
    return (item.to_json(), item.size(), type(item.attrs), {k: type(v) for k, v in item.attrs.items()})


def test_the_linear_item_size_check_builds_the_items_moto_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.dynamo_type import Item

    moto_builds = [_moto_item(attrs) for attrs in ITEMS]
    monkeypatch.setattr(Item, "__init__", Item.__init__)  # put moto's own back after the test
    linear_item_size_check()
    assert [_moto_item(attrs) for attrs in ITEMS] == moto_builds
    assert [built[0] for built in moto_builds].count("too large") == 2


def test_moto_server_refuses_an_item_over_the_limit_as_moto_does(aws_env: dict[str, str]) -> None:
    client = boto3.client("dynamodb")
    client.create_table(TableName="sizes", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    client.put_item(TableName="sizes", Item={"k": {"S": "small"}, "v": {"S": "x" * 1000}})
    with pytest.raises(client.exceptions.ClientError, match="Item size has exceeded the maximum allowed size"):
        client.put_item(TableName="sizes", Item={"k": {"S": "big"}, "v": {"S": "x" * 405_000}})
    assert client.get_item(TableName="sizes", Key={"k": {"S": "small"}})["Item"]["v"]["S"] == "x" * 1000


# -- Firestore emulator -------------------------------------------------------------------------
@needs_gcloud
def test_firestore_write_read_query_transaction(firestore_env: dict[str, str]) -> None:
    from google.cloud import firestore
    from google.cloud.firestore_v1.base_query import FieldFilter

    db = firestore.Client()
    inventory = db.collection("inventory")
    for i, (group, carat) in enumerate([("ideal-e-vs1", 0.7), ("ideal-e-vs1", 0.5), ("good-h-si1", 0.6)]):
        inventory.document(f"s{i}").set({"stone_group": group, "carat": carat})

    assert inventory.document("s1").get().to_dict() == {"stone_group": "ideal-e-vs1", "carat": 0.5}
    query = inventory.where(filter=FieldFilter("stone_group", "==", "ideal-e-vs1")).order_by("carat")
    assert [d.get("carat") for d in query.stream()] == [0.5, 0.7]

    @firestore.transactional
    def increment(transaction: firestore.Transaction, ref: firestore.DocumentReference) -> None:
        snapshot = ref.get(transaction=transaction)
        transaction.set(ref, {"n": (snapshot.get("n") if snapshot.exists else 0) + 1})

    counter = db.collection("counters").document("uploads")
    for _ in range(3):
        increment(db.transaction(), counter)
    assert counter.get().get("n") == 3


@needs_gcloud
def test_the_firestore_emulators_jvm_runs_with_the_launchers_options_unless_told_otherwise(
        firestore_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    assert firestore_emulator.pid is not None
    javas = [pid for pid in group_members(firestore_emulator.pid)
             if Path(f"/proc/{pid}/exe").resolve().name == "java"]
    assert javas
    environ = Path(f"/proc/{javas[0]}/environ").read_bytes().split(b"\0")
    assert f"JAVA_TOOL_OPTIONS={EMULATOR_JAVA_OPTIONS}".encode() in environ
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Xmx1g")
    assert FirestoreEmulator()._extra_env["JAVA_TOOL_OPTIONS"] == "-Xmx1g"


def test_firestore_clear_deletes_the_projects_documents(
    firestore_env: dict[str, str], firestore_emulator: FirestoreEmulator
) -> None:
    from google.cloud import firestore

    db = firestore.Client()
    db.collection("predictions").document("r1").set({"caller": "sub-1"})
    firestore_emulator.clear()
    assert list(db.collection("predictions").stream()) == []


# -- GCS emulator -------------------------------------------------------------------------------
def test_google_cloud_storage_works_through_the_emulator(gcs_env: dict[str, str]) -> None:
    from google.api_core.exceptions import NotFound
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    # The client detects STORAGE_EMULATOR_HOST by itself; explicit anonymous credentials
    # are what code that builds its own client passes.
    client = storage.Client(project=gcs_env["GOOGLE_CLOUD_PROJECT"], credentials=AnonymousCredentials())
    bucket = client.create_bucket("gemcast-data")
    bucket.blob("raw/batch-1.csv").upload_from_string("carat,cut\n0.3,Ideal\n", content_type="text/csv")
    bucket.blob("raw/batch-2.csv").upload_from_string(b"carat,cut\n")
    bucket.blob("models/champion.json").upload_from_string(json.dumps({"version": "v1"}))

    assert bucket.blob("raw/batch-1.csv").download_as_text() == "carat,cut\n0.3,Ideal\n"
    assert [b.name for b in client.list_blobs("gemcast-data", prefix="raw/")] == [
        "raw/batch-1.csv",
        "raw/batch-2.csv",
    ]
    bucket.blob("raw/batch-2.csv").delete()
    assert not bucket.blob("raw/batch-2.csv").exists()
    with pytest.raises(NotFound):
        bucket.blob("raw/batch-2.csv").download_as_bytes()


def test_gcs_clear_deletes_buckets_and_objects(gcs_env: dict[str, str], gcs_emulator: GcsEmulator) -> None:
    from google.cloud import storage

    client = storage.Client()
    client.create_bucket("scratch").blob("k").upload_from_string("v")
    gcs_emulator.clear()
    assert list(client.list_buckets()) == []


# -- process management -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "server_class",
    [MotoServer, GcsEmulator, pytest.param(FirestoreEmulator, marks=needs_gcloud)],
)
def test_stop_leaves_no_process_of_the_server(server_class: type[StandInServer]) -> None:
    server = server_class()
    with server:
        pgid = server.pid
        assert pgid is not None
        assert group_members(pgid)
        if server_class is FirestoreEmulator:
            # gcloud -> shell -> java: killing gcloud alone would orphan the emulator.
            assert len(group_members(pgid)) >= 2
        url = server.url
    assert group_members(pgid) == []
    assert not _answers(url)
    assert server.pid is None


class _ExitsAtOnce(StandInServer):
    name = "broken"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import sys; print('cannot open the data dir'); sys.exit(3)"]

    def env(self) -> dict[str, str]:
        return {}


class _NeverListens(StandInServer):
    name = "silent"

    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; print('still thinking', flush=True); time.sleep(60)"]

    def env(self) -> dict[str, str]:
        return {}


def test_a_server_that_exits_while_starting_reports_its_output(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*cannot open the data dir"):
        _ExitsAtOnce(log_path=tmp_path / "broken.log").start()


def test_a_server_that_never_answers_times_out_and_is_killed(tmp_path: Path) -> None:
    server = _NeverListens(startup_timeout_s=1.0, log_path=tmp_path / "silent.log")
    with pytest.raises(ServerStartError, match=r"(?s)did not answer within 1 s.*still thinking") as info:
        server.launch()
        pgid = server.pid
        server.wait_ready()
    assert "silent" in str(info.value)
    assert pgid is not None and group_members(pgid) == []


def test_group_stops_the_started_servers_when_another_fails(tmp_path: Path) -> None:
    moto = MotoServer()
    with pytest.raises(ServerStartError):
        ServerGroup().start(moto, _ExitsAtOnce(log_path=tmp_path / "broken.log"))
    assert not moto.running


def test_group_gives_the_union_of_envs_and_stops_everything() -> None:
    with ServerGroup() as group:
        moto, gcs = group.start(MotoServer(), GcsEmulator())
        pids = [moto.pid, gcs.pid]
        env = group.env()
        assert env["AWS_ENDPOINT_URL"] == moto.url
        assert env["STORAGE_EMULATOR_HOST"] == gcs.url
    assert all(pid is not None and group_members(pid) == [] for pid in pids)


_RUNNER = textwrap.dedent(
    """
    import signal, sys, time
    from gemcast_local.servers import GcsEmulator, MotoServer, ServerGroup, exit_on_sigterm
    exit_on_sigterm()
    # Ctrl-C reaches a stack run in the foreground; a test run started in the background by a
    # shell inherits SIGINT ignored, which Python keeps, so the default is put back here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logs = sys.argv[1]
    with ServerGroup() as group:
        servers = MotoServer(log_path=logs + "/moto.log"), GcsEmulator(log_path=logs + "/gcs.log")
        for server in group.start(*servers):
            print(server.pid, flush=True)
        print("ready", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.parametrize(
    "sig",
    [
        signal.SIGINT,
        signal.SIGTERM,
        pytest.param(
            signal.SIGKILL,
            marks=pytest.mark.skipif(
                not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only"
            ),
        ),
    ],
    ids=["ctrl-c", "sigterm", "sigkill"],
)
def test_servers_die_with_their_runner(sig: signal.Signals, tmp_path: Path) -> None:
    # A local stack stopped with Ctrl-C, cancelled by CI, or killed outright leaves nothing.
    runner = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    try:
        assert runner.stdout is not None
        pids = [int(runner.stdout.readline()), int(runner.stdout.readline())]
        assert runner.stdout.readline().strip() == "ready"
        assert all(group_members(pid) for pid in pids)
        runner.send_signal(sig)
        runner.wait(timeout=30)
        assert [_wait_until_gone(pid) for pid in pids] == [[], []]
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
