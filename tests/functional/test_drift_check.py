"""drift_check on moto, and `gemcast-local drift` on a local stack: the alarm and the retraining.

A champion is trained for real (linear, on 800 stones of the bundled data, through the curated
data as the stack ingests it), so its package holds the training summary the pipeline writes.
A day of logged stones over 2 ct then gives the DriftAlarm's state and a training job that the
job's own gate judges; a day of stones like the training data gives neither.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from gemcast.aws import to_item
from gemcast.drift import REPORT_PREFIX, SUMMARY_FILE
from gemcast.ingest import ingest_object
from gemcast.pipeline import Progress, run_training
from gemcast.registry import Registry
from gemcast.storage import S3Storage
from gemcast_local.cli import main as local_main
from gemcast_local.drift import alarm_rule, alarm_state
from gemcast_local.invoke import load_event
from gemcast_local.runtime import import_handler
from gemcast_local.template import dynamodb_tables, load_template
from tests import drift_data

REPO = Path(__file__).resolve().parents[2]
BUCKET = "gemcast-test-drift"
TABLES = ("PredictionLogTable", "IdempotencyTable")


@pytest.fixture
def stack(aws_env: dict[str, str], provisioned: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    """A bucket with curated data and a trained champion, the template's two tables, and the
    state file `gemcast-local up` would write."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    template = load_template(REPO / "template.yaml")
    for kwargs in dynamodb_tables(template, name=lambda lid: f"test-{lid}"):
        if kwargs["TableName"].removeprefix("test-") in TABLES:
            boto3.client("dynamodb").create_table(**kwargs)
    first_800 = b"".join((REPO / "data" / "diamonds.csv").read_bytes().splitlines(keepends=True)[:801])
    s3.put_object(Bucket=BUCKET, Key="raw/batch.csv", Body=first_800)
    ingest_object(S3Storage(BUCKET, client=s3), "raw/batch.csv", NoInventory())
    outcome = run_training(f"s3://{BUCKET}/curated/", f"s3://{BUCKET}/models", kind="linear", budget_s=1,
                           progress=Progress(emit=lambda _m: None))
    assert outcome.promoted
    values = {**provisioned, **{lid: f"test-{lid}" for lid in TABLES}, "DataBucket": BUCKET}
    state = {"pid": os.getpid(), "env": aws_env, "values": values}
    (tmp_path / "stack.json").write_text(json.dumps(state))
    return {"s3": s3, "state": tmp_path, "champion": outcome.version, "template": template}


def log_day(rows: list[dict[str, Any]]) -> None:
    """The stones as the API logged them over the last hours (inside the last day's window)."""
    table = boto3.resource("dynamodb").Table("test-PredictionLogTable")
    with table.batch_writer() as batch:
        for record in drift_data.records(rows, start=time.time() - 6 * 3600, step_s=30):
            batch.put_item(Item=to_item(record))


def lambda_env(monkeypatch: pytest.MonkeyPatch, **extra: str) -> None:
    """What the template gives DriftCheckFunction, on this test's bucket and table."""
    for name, value in {"DATA_BUCKET": BUCKET, "REGISTRY_URI": f"s3://{BUCKET}/models",
                        "PREDICTION_LOG_TABLE": "test-PredictionLogTable", "POWERTOOLS_SERVICE_NAME": "drift_check",
                        "POWERTOOLS_METRICS_NAMESPACE": "gemcast", "POWERTOOLS_TRACE_DISABLED": "true",
                        **extra}.items():
        monkeypatch.setenv(name, value)


def test_the_champion_package_holds_its_training_summary(stack: dict[str, Any]) -> None:
    registry = Registry(f"s3://{BUCKET}/models", storage=S3Storage(BUCKET, "models", client=stack["s3"]))
    summary = json.loads(registry.read_file(stack["champion"], SUMMARY_FILE))
    assert summary["version"] == stack["champion"] and summary["features"]["carat"]["n"] > 500
    card = registry.read_file(stack["champion"], "model_card.md").decode()
    assert "../../monitoring/drift/latest.md" in card


def test_a_day_over_two_carats_gives_the_alarm_and_a_training_job_the_gate_judges(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    log_day(drift_data.over_two_carats(300))

    assert local_main(["drift", "--state", str(stack["state"]), "--kind", "linear", "--budget", "1"]) == 0
    result = json.loads(capsys.readouterr().out)

    drift, trigger = result["drift"], result["trigger"]
    assert drift["status"] == "drift" and drift["alarm"] is True and drift["counts"]["stones"] == 300
    assert result["alarm"] == "ALARM" and drift["score"] > alarm_rule(stack["template"])[0]
    # The data did not change, yet the trigger ran a job; the job's gate decided.
    assert trigger["submitted"] is True and "drift alarm" in trigger["plan"]["reason"]
    assert trigger["plan"]["snapshot_id"] == trigger["plan"]["champion_snapshot_id"]
    assert trigger["job"]["exit_code"] == 0 and "-drift-" in trigger["job"]["job_name"]
    registry = Registry(f"s3://{BUCKET}/models", storage=S3Storage(BUCKET, "models", client=stack["s3"]))
    retrained = [v for v in registry.versions() if v != stack["champion"]]
    assert len(retrained) == 1 and "gate" in registry.manifest(retrained[0])
    report = json.loads(stack["s3"].get_object(Bucket=BUCKET, Key=f"{REPORT_PREFIX}latest.json")["Body"].read())
    assert report["worst_feature"] in {"carat", "x", "y", "z", "price"} and report["alarm"] is True


def test_a_day_like_the_training_data_gives_no_alarm_and_no_job(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    log_day(drift_data.like_training(300))

    assert local_main(["drift", "--state", str(stack["state"])]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["drift"]["status"] == "ok" and result["alarm"] == "OK" and "trigger" not in result
    assert result["drift"]["score"] < alarm_rule(stack["template"])[0]


def test_the_lambda_publishes_the_score_and_each_feature_by_emf(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch, lambda_context: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_day(drift_data.over_two_carats(40))  # enough with DRIFT_MIN_STONES=30
    lambda_env(monkeypatch, DRIFT_MIN_STONES="30")
    app = import_handler("drift_check", {})

    result = app.lambda_handler(load_event("drift_check_daily.json"), lambda_context)

    assert result["status"] == "drift" and result["counts"]["stones"] == 40
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = {m["Name"]: blob for blob in blobs for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert names["DriftScore"]["DriftScore"] == [result["score"]] and names["DriftScore"]["service"] == "drift_check"
    features = {blob["feature"] for blob in blobs if "FeatureDrift" in blob}
    assert {"carat", "cut", "price"} <= features
    assert alarm_state(result["score"], stack["template"]) == "ALARM"
    assert alarm_state(None, stack["template"]) == "INSUFFICIENT_DATA"


def test_a_past_window_with_too_few_stones_says_so_and_publishes_no_score(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch, lambda_context: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_day(drift_data.over_two_carats(300))  # today: outside the past window
    lambda_env(monkeypatch)

    app = import_handler("drift_check", {})
    result = app.lambda_handler(load_event("drift_check_past_window.json"), lambda_context)

    assert result["status"] == "insufficient_data" and result["alarm"] is False and result["score"] is None
    assert result["counts"]["stones"] == 0 and "at least 200" in result["message"]
    printed = capsys.readouterr().out
    assert '"DriftStones"' in printed and '"DriftScore"' not in printed
    key = f"{REPORT_PREFIX}2024-05-02T000000Z/report.md"
    page = stack["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    assert "insufficient_data" in page


class NoInventory:
    def put_stones(self, stones: Any) -> int:
        return len(list(stones))

    def similar(self, *args: Any) -> list[dict[str, Any]]:
        return []
