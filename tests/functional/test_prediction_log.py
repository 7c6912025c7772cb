"""The DynamoDB prediction log on moto: a record of any size lands in the table, the bucket
or the dead-letter queue, and the reader gives it back whole.

The table, bucket and queue come from template.yaml (the local stack's own code creates them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest

from gemcast.api import ApiResponse, handle_predictions, log_record
from gemcast.aws import (
    ITEM_BUDGET,
    SQS_BODY_BUDGET,
    DynamoPredictionLog,
    dead_letters,
    from_item,
    recent_for_caller,
    records_from_dead_letters,
)
from gemcast.log_overflow import LOG_PREFIX, REF_FIELD, UNAVAILABLE_FIELD, record_key
from gemcast.storage import S3Storage
from gemcast_local.provision import provision
from gemcast_local.template import load_template

REPO = Path(__file__).resolve().parents[2]
STONE = {"carat": 0.7, "cut": "Ideal", "color": "E", "clarity": "VS1", "depth": 61.5, "table": 55,
         "x": 5.7, "y": 5.72, "z": 3.52}


def record(request_id: str, *, noise_bytes: int = 0, caller: str = "user-1") -> dict[str, Any]:
    """A log record; ``noise_bytes`` of incompressible text in the request (as a hostile client sends)."""
    request: dict[str, Any] = dict(STONE)
    if noise_bytes:
        request["note"] = os.urandom(noise_bytes // 2).hex()
    return log_record(request_id=request_id, caller=caller, route="POST /v1/predictions", request=request,
                      response={"price": 3307.0, "request_id": request_id}, status=200, model_version="v1",
                      latency_ms=12.5)


@pytest.fixture
def resources(aws_env: dict[str, str]) -> dict[str, Any]:
    values = provision(load_template(REPO / "template.yaml"), boto3.client, aws_env["AWS_DEFAULT_REGION"])
    return {
        "table": boto3.resource("dynamodb").Table(values["PredictionLogTable"]),
        "bucket": values["DataBucket"],
        "dlq": values["PredictionLogDLQ"],
        "logs": S3Storage(values["DataBucket"], "logs"),
    }


def dead_lettered(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return records_from_dead_letters(bodies)
        bodies.extend(m["Body"] for m in got)


def test_a_record_over_the_item_limit_is_kept_whole_in_the_bucket_and_read_back(resources: dict[str, Any]) -> None:
    big = record("req-big", noise_bytes=600_000)
    log = DynamoPredictionLog(resources["table"], boto3.client("sqs"), resources["dlq"], overflow=resources["logs"])

    assert log.write(big) is True and log.write(record("req-small")) is True

    item = resources["table"].get_item(Key={"request_id": "req-big"})["Item"]
    key = f"logs/{record_key(big)}"
    assert item[REF_FIELD] == f"s3://{resources['bucket']}/{key}" and "request" not in item
    assert item["caller"] == "user-1" and item["status"] == 200
    assert key.startswith(f"logs/{big['created_at'][:10]}/")
    assert json.loads(boto3.client("s3").get_object(Bucket=resources["bucket"], Key=key)["Body"].read()) == big
    mine = recent_for_caller(resources["table"], "user-1", 10, resources["logs"])
    by_id = {r["request_id"]: r for r in mine}
    assert by_id["req-big"]["request"] == big["request"] and by_id["req-big"]["response"] == big["response"]
    assert by_id["req-small"]["request"] == STONE
    # Without the storage object the reader follows the URI itself.
    assert from_item(dict(item))["request"]["note"] == big["request"]["note"]


def test_when_the_table_fails_a_large_record_is_in_the_bucket_and_its_reference_in_the_dlq(
        resources: dict[str, Any]) -> None:
    big = record("req-big-dlq", noise_bytes=600_000)
    missing = boto3.resource("dynamodb").Table("gemcast-local-no-such-table")
    failures: list[str] = []
    log = DynamoPredictionLog(missing, boto3.client("sqs"), resources["dlq"], overflow=resources["logs"],
                              backoff_s=0.001, on_failure=failures.append)

    assert log.write(big) is True

    assert failures == ["retry", "retry", "retry", "dlq"]
    (found,) = dead_lettered(resources["dlq"])
    assert found["request"] == big["request"] and found[REF_FIELD].endswith(record_key(big))


def test_with_table_and_bucket_failing_a_large_record_reaches_the_dlq_in_parts(resources: dict[str, Any]) -> None:
    big = record("req-parts", noise_bytes=700_000)
    missing = boto3.resource("dynamodb").Table("gemcast-local-no-such-table")
    log = DynamoPredictionLog(missing, boto3.client("sqs"), resources["dlq"],
                              overflow=S3Storage("no-such-bucket", "logs"), backoff_s=0.001)

    assert log.write(big) is True

    assert dead_lettered(resources["dlq"]) == [big]


def test_a_large_record_needs_no_bucket_to_reach_the_dlq() -> None:
    big = record("req-x", noise_bytes=900_000)
    from gemcast.api import pack_documents

    bodies = dead_letters(big, pack_documents(big))
    assert len(bodies) > 1 and all(len(b.encode()) <= SQS_BODY_BUDGET for b in bodies)
    assert records_from_dead_letters(list(reversed(bodies))) == [big]
    assert records_from_dead_letters(bodies[1:]) == []  # an incomplete record is not made up


def test_only_when_everything_fails_is_the_record_a_log_line_and_write_false(
        resources: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    missing = boto3.resource("dynamodb").Table("gemcast-local-no-such-table")
    failures: list[str] = []
    log = DynamoPredictionLog(missing, boto3.client("sqs"), resources["dlq"] + "-missing", backoff_s=0.001,
                              on_failure=failures.append)

    assert log.write(record("req-lost")) is False
    assert failures[-1] == "lost"
    assert any("req-lost" in r.getMessage() and r.levelname == "CRITICAL" for r in caplog.records)


def test_a_price_whose_record_cannot_be_stored_is_not_handed_out() -> None:
    class Endpoint:
        def invoke(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
            return {"predictions": [{"price": 3307.0}] * len(instances), "model_version": "v1"}

    class Log:
        def __init__(self, stored: bool) -> None:
            self.stored = stored
            self.records: list[dict[str, Any]] = []

        def write(self, rec: dict[str, Any]) -> bool:
            self.records.append(rec)
            return self.stored

    def price(log: Log, body: str) -> ApiResponse:
        return handle_predictions(body, request_id="r1", caller="u", endpoint=Endpoint(), log=log)

    down = Log(stored=False)
    refused = price(down, json.dumps(STONE))
    assert refused.status == 503 and refused.headers["Retry-After"]
    assert "log" in refused.body["error"]["message"] and "price" not in refused.body
    assert down.records[0]["status"] == 200  # what the log line keeps for replay
    assert price(Log(stored=True), json.dumps(STONE)).status == 200
    assert price(down, "{").status == 400  # a refusal stays what it is


def test_the_item_budget_fits_dynamodb() -> None:
    assert ITEM_BUDGET < 400 * 1024 and SQS_BODY_BUDGET < 256 * 1024


def test_the_predict_function_may_write_and_read_exactly_the_log_prefix() -> None:
    template = load_template(REPO / "template.yaml")
    function = template["Resources"]["PredictProxyFunction"]["Properties"]
    assert function["Environment"]["Variables"]["PREDICTION_LOG_URI"] == {"Fn::Sub": f"s3://${{DataBucket}}/{LOG_PREFIX}"}
    statements = [s for p in function["Policies"] if isinstance(p, dict) for s in p.get("Statement", [])]
    on_logs = [s for s in statements if "logs" in json.dumps(s.get("Resource"))]
    assert on_logs == [{"Sid": "WriteAndReadLargeLogRecords", "Effect": "Allow",
                        "Action": ["s3:PutObject", "s3:GetObject"],
                        "Resource": {"Fn::Sub": f"${{DataBucket.Arn}}/{LOG_PREFIX}/*"}}]


def test_gcp_grants_the_api_account_the_log_prefix_only(tmp_path: Path) -> None:
    import shlex
    import subprocess

    done = subprocess.run(["bash", str(REPO / "gcp" / "deploy.sh"), "dev"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "DRY_RUN": "1", "GCP_BUILD_DIR": str(tmp_path), "MODEL_TAG": "t1"},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]
    grants = [c for c in commands if c[:4] == ["gcloud", "storage", "buckets", "add-iam-policy-binding"]
              and any("gemcast-api@" in a for a in c) and "--role=roles/storage.objectUser" in c]
    (grant,) = grants
    assert any(a.startswith("--condition=expression=resource.name.startsWith(\"projects/_/buckets/gemcast-dev-data"
                            f"/objects/{LOG_PREFIX}/\")") for a in grant), grant
    env = (REPO / "gcp" / "env" / "dev.yaml").read_text()
    assert f'PREDICTION_LOG_URI: "gs://gemcast-dev-data/{LOG_PREFIX}"' in env


def test_the_log_uri_setting_is_read_and_checked() -> None:
    from gemcast.config import Settings
    from gemcast.errors import ConfigError

    assert Settings.from_env({"PREDICTION_LOG_URI": "s3://b/logs"}).prediction_log_uri == "s3://b/logs"
    with pytest.raises(ConfigError, match="PREDICTION_LOG_URI"):
        Settings.from_env({"PREDICTION_LOG_URI": "b/logs"})


def test_a_reader_goes_on_when_the_whole_record_cannot_be_read(resources: dict[str, Any]) -> None:
    big = record("req-gone", noise_bytes=600_000)
    log = DynamoPredictionLog(resources["table"], boto3.client("sqs"), resources["dlq"], overflow=resources["logs"])
    assert log.write(big) is True
    boto3.client("s3").delete_object(Bucket=resources["bucket"], Key=f"logs/{record_key(big)}")

    (found,) = recent_for_caller(resources["table"], "user-1", 10, resources["logs"])

    assert found["request_id"] == "req-gone" and found["status"] == 200
    assert "could not be read" in found[UNAVAILABLE_FIELD] and "request" not in found


def test_the_drift_check_may_read_the_log_prefix() -> None:
    function = load_template(REPO / "template.yaml")["Resources"]["DriftCheckFunction"]["Properties"]
    statements = [s for p in function["Policies"] if isinstance(p, dict) for s in p.get("Statement", [])]
    assert {"Sid": "ReadLargeLogRecords", "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": {"Fn::Sub": f"${{DataBucket.Arn}}/{LOG_PREFIX}/*"}} in statements
