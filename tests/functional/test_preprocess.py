"""preprocess: the S3 event of a raw batch, driven by its events/ files against S3 and DynamoDB on moto.

The inventory table is created from template.yaml, so a key-schema change there reaches here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest

from gemcast_local.invoke import load_event, retarget_s3_event
from gemcast_local.invoke import main as invoke_main
from gemcast_local.runtime import import_handler

REPO = Path(__file__).resolve().parents[2]
DIAMONDS = (REPO / "data" / "diamonds.csv").read_bytes()
BUCKET = "gemcast-test-data"


@pytest.fixture
def stack(provisioned: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The data bucket and the template's InventoryTable on moto; the function's environment set."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    # Versioned like the real data bucket: a rewrite of the same bytes still shows as a new version.
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    table = boto3.resource("dynamodb").Table(provisioned["InventoryTable"])
    for name, value in {"INVENTORY_TABLE": table.name, "DATA_BUCKET": BUCKET,
                        "POWERTOOLS_SERVICE_NAME": "preprocess", "POWERTOOLS_METRICS_NAMESPACE": "gemcast",
                        "POWERTOOLS_TRACE_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    return {"s3": s3, "table": table, "app": import_handler("preprocess", {})}


def event(name: str) -> dict[str, Any]:
    return retarget_s3_event(load_event(name), BUCKET)


def objects(s3: Any, prefix: str) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listing}


def versions(s3: Any) -> list[tuple[str, str]]:
    listing = s3.list_object_versions(Bucket=BUCKET)
    return sorted((v["Key"], v["VersionId"]) for v in listing.get("Versions", []))


def item_count(table: Any) -> int:
    count, kwargs = 0, {"Select": "COUNT"}
    while True:
        page = table.scan(**kwargs)
        count += page["Count"]
        if "LastEvaluatedKey" not in page:
            return count
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def rejected_by_line(s3: Any, key: str) -> dict[int, dict[str, str]]:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    rows = [json.loads(line) for line in body.splitlines()]
    return {r["line"]: {p["field"]: p["reason"] for p in r["reasons"]} for r in rows}


def test_the_planted_errors_land_in_rejected_with_their_reasons(
    stack: dict[str, Any], lambda_context: Any
) -> None:
    s3 = stack["s3"]
    s3.put_object(Bucket=BUCKET, Key="raw/diamonds.csv", Body=DIAMONDS)

    result = stack["app"].lambda_handler(event("preprocess_raw_batch.json"), lambda_context)

    (batch,) = result["batches"]
    assert batch["status"] == "ingested" and result["unusable"] == []
    assert batch["accepted"] + batch["rejected"] == 5000
    rejected = rejected_by_line(s3, "rejected/diamonds.jsonl")
    assert len(rejected) == batch["rejected"]
    # data/README.md gives 0-based pandas rows; a file line is that + 2 (header, 1-based).
    for row in (331, 2121, 2484, 2933, 3155, 3317, 3445, 3904, 3980, 4188):
        assert "greater than 0" in rejected[row + 2]["price"]
    assert all("greater than 0" in rejected[4321 + 2][f] for f in ("x", "y", "z"))
    assert "at most 80" in rejected[679 + 2]["table"]
    assert "contradicts" in rejected[1889 + 2]["depth"]
    assert "contradicts" in rejected[1776 + 2]["depth"]
    assert "exact duplicate" in rejected[4943 + 2]["row"]
    # The accepted rows are curated and loaded, one inventory item each.
    curated = s3.get_object(Bucket=BUCKET, Key="curated/diamonds.csv")["Body"].read().decode()
    assert len(curated.splitlines()) == batch["accepted"] + 1
    assert item_count(stack["table"]) == batch["accepted"] == batch["loaded"]
    snapshot = json.loads(objects(s3, "curated/_snapshot.json")["curated/_snapshot.json"])
    assert snapshot["snapshot_id"] == batch["snapshot_id"] and snapshot["accepted"] == batch["accepted"]


def test_a_redelivered_event_changes_nothing(stack: dict[str, Any], lambda_context: Any) -> None:
    s3 = stack["s3"]
    # The first 400 stones hold a planted error (row 331), so rejected/ has something to keep.
    first_400 = b"".join(DIAMONDS.splitlines(keepends=True)[:401])
    s3.put_object(Bucket=BUCKET, Key="raw/diamonds.csv", Body=first_400)
    first = stack["app"].lambda_handler(event("preprocess_raw_batch.json"), lambda_context)
    assert first["batches"][0]["rejected"] > 0
    before = objects(s3, "curated/") | objects(s3, "rejected/")
    items_before = item_count(stack["table"])
    versions_before = versions(s3)

    again = stack["app"].lambda_handler(event("preprocess_raw_batch.json"), lambda_context)

    assert again["batches"][0]["status"] == "unchanged"
    assert objects(s3, "curated/") | objects(s3, "rejected/") == before  # byte for byte, _snapshot.json too
    assert versions(s3) == versions_before  # not even rewritten with the same bytes
    assert item_count(stack["table"]) == items_before


def test_a_url_encoded_key_with_spaces_is_ingested(stack: dict[str, Any], lambda_context: Any) -> None:
    s3 = stack["s3"]
    small = b"".join(DIAMONDS.splitlines(keepends=True)[:41])  # header and 40 stones
    s3.put_object(Bucket=BUCKET, Key="raw/may 2024 batch.csv", Body=small)

    result = stack["app"].lambda_handler(event("preprocess_key_with_spaces.json"), lambda_context)

    (batch,) = result["batches"]
    assert (batch["status"], batch["key"]) == ("ingested", "raw/may 2024 batch.csv")
    assert "curated/may 2024 batch.csv" in objects(s3, "curated/")
    assert item_count(stack["table"]) == result["batches"][0]["accepted"] > 0


def test_an_unusable_file_is_recorded_and_reported_not_raised(
    stack: dict[str, Any], lambda_context: Any
) -> None:
    s3 = stack["s3"]
    s3.put_object(Bucket=BUCKET, Key="raw/not_diamonds.csv",
                  Body=(REPO / "events" / "preprocess_objects" / "not_diamonds.csv").read_bytes())

    result = stack["app"].lambda_handler(event("preprocess_unusable_file.json"), lambda_context)

    assert result["unusable"] == ["raw/not_diamonds.csv"]
    error = json.loads(objects(s3, "rejected/")["rejected/not_diamonds.error.json"])
    assert "wrong header" in error["error"] and error["key"] == "raw/not_diamonds.csv"
    assert objects(s3, "curated/") == {} and item_count(stack["table"]) == 0


def test_an_object_that_is_not_a_batch_is_skipped(stack: dict[str, Any], lambda_context: Any) -> None:
    s3 = stack["s3"]
    s3.put_object(Bucket=BUCKET, Key="raw/README.txt", Body=b"notes")
    notes = event("preprocess_raw_batch.json")
    notes["Records"][0]["s3"]["object"]["key"] = "raw/README.txt"

    result = stack["app"].lambda_handler(notes, lambda_context)

    assert result["batches"][0]["status"] == "skipped"
    assert objects(s3, "curated/") == {} and objects(s3, "rejected/") == {}


def test_make_invoke_without_a_local_stack_runs_against_its_own_moto(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make invoke-preprocess CASE=unusable_file` with no stack running: stdout is the response."""
    assert invoke_main(["preprocess", "--case", "unusable_file", "--state", str(tmp_path)]) == 0

    out = capsys.readouterr()
    assert json.loads(out.out)["unusable"] == ["raw/not_diamonds.csv"]
    assert "moto server started for this call" in out.err
