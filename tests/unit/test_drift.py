"""Drift from the prediction log against the champion's training summary (gemcast.drift)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gemcast.aws import from_item, to_item
from gemcast.drift import (
    REPORT_PREFIX,
    STATUS_DRIFT,
    STATUS_NO_SUMMARY,
    STATUS_OK,
    STATUS_TOO_FEW,
    SUMMARY_FILE,
    Window,
    check_drift,
    compare,
    metric_points,
    psi,
    read_window,
    window_for,
)
from gemcast.errors import ValidationError
from gemcast.registry import ModelPackage, Registry
from gemcast.storage import FileStorage
from gemcast.trigger import TrainingPlan, job_name, plan_training, retrain_request
from tests import drift_data

WINDOW = Window.ending(datetime(2024, 5, 2, tzinfo=UTC))
EVENTS = Path(__file__).resolve().parents[2] / "events"


def sample(rows: list[dict]) -> object:
    return read_window((to_item(r) for r in drift_data.records(rows)), from_item)


def test_psi_is_zero_for_equal_shares_and_grows_with_the_shift() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    assert 0 < psi([0.5, 0.5], [0.6, 0.4]) < psi([0.5, 0.5], [0.9, 0.1])
    assert psi([0.5, 0.5], [1.0, 0.0]) < 10  # an empty bin is floored, not infinite


def test_the_training_summary_has_every_feature_grade_and_the_price() -> None:
    summary = drift_data.summary()
    features = summary["features"]
    assert set(features) == {"carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z", "price"}
    assert features["cut"]["categories"] == ["Fair", "Good", "Very Good", "Premium", "Ideal"]
    for feature in features.values():
        assert sum(feature["shares"]) == pytest.approx(1.0)
    # Quantile bins: about a tenth of the training stones each.
    assert max(features["carat"]["shares"]) < 0.2 and len(features["carat"]["edges"]) >= 8


def test_stones_like_the_training_data_give_no_alarm() -> None:
    report = compare(drift_data.summary(), sample(drift_data.like_training(400)), WINDOW)

    assert report["status"] == STATUS_OK and report["alarm"] is False
    assert report["score"] < 0.1, report["message"]
    assert report["counts"]["stones"] == 400 and report["counts"]["malformed_records"] == 0


def test_a_day_of_stones_over_two_carats_gives_the_alarm() -> None:
    report = compare(drift_data.summary(), sample(drift_data.over_two_carats(300)), WINDOW)

    assert report["status"] == STATUS_DRIFT and report["alarm"] is True
    assert report["score"] > 1.0
    assert report["features"]["carat"]["psi"] > 1.0 and report["features"]["price"]["psi"] > 1.0
    assert report["features"]["carat"]["window_min"] > 2.0
    # The grades of big stones differ less than their sizes do.
    assert report["features"]["cut"]["psi"] < report["features"]["carat"]["psi"]
    names = {(name, labels.get("feature")) for name, labels, _ in metric_points(report)}
    assert ("DriftScore", None) in names and ("FeatureDrift", "carat") in names


def test_too_few_stones_say_so_with_no_score_and_no_alarm() -> None:
    report = compare(drift_data.summary(), sample(drift_data.over_two_carats(50)), WINDOW, min_stones=200)

    assert report["status"] == STATUS_TOO_FEW and report["alarm"] is False and report["score"] is None
    assert "only 50 priced stones" in report["message"]
    # No DriftScore point: the alarm sees missing data, which does not breach.
    assert [name for name, _, _ in metric_points(report)] == ["DriftStones", "DriftMalformedRecords"]


def test_malformed_records_are_counted_not_fatal() -> None:
    good = [to_item(r) for r in drift_data.records(drift_data.like_training(100))]
    broken = [
        {**good[0], "request": "{not json"},  # undecodable
        {**good[1], "status": None},  # no status
        {**good[2], "response": json.dumps({"predictions": [{"price": 1.0}]})},  # 5 stones, 1 answer
        "not even a mapping",
    ]
    failed = {**good[3], "status": 503}
    other = {**good[4], "route": "GET /v1/diamonds/similar"}

    result = read_window(good[5:] + broken + [failed, other], from_item)

    assert result.malformed == 4 and len(result.malformed_examples) == 4
    assert result.failed_requests == 1 and result.other_routes == 1
    assert result.requests == 15 and len(result.stones) == 15 * 5


def test_an_invalid_stone_in_a_batch_is_counted_and_left_out() -> None:
    (record,) = drift_data.records(drift_data.like_training(2), per_request=2)
    record["request"][1]["carat"] = 99
    record["response"]["predictions"][1] = {"error": {"message": "invalid stone"}}

    result = read_window([record], lambda r: r)

    assert len(result.stones) == 1 and result.invalid_stones == 1 and result.malformed == 0


def test_check_drift_writes_the_report_and_the_latest_copy(tmp_path: Path) -> None:
    bucket = FileStorage(tmp_path / "bucket")
    registry = Registry(f"{bucket.uri}/models", storage=bucket.child("models"))
    publish_champion(registry, with_summary=True)
    items = [to_item(r) for r in drift_data.records(drift_data.over_two_carats(250))]

    report = check_drift(items, from_item, registry, bucket, WINDOW)

    folder = f"{REPORT_PREFIX}2024-05-02T000000Z/"
    assert report["report_uri"].endswith(f"{folder}report.json") and report["model_version"] == "v1"
    assert json.loads(bucket.read_bytes(f"{folder}report.json"))["alarm"] is True
    page = bucket.read_bytes(f"{folder}report.md").decode()
    assert "status: **drift**" in page and "](drift.svg)" in page and "| carat |" in page
    assert bucket.read_bytes(f"{folder}drift.svg").startswith(b"<svg")
    latest = bucket.read_bytes(f"{REPORT_PREFIX}latest.md").decode()
    assert "](2024-05-02T000000Z/drift.svg)" in latest


def test_a_champion_without_a_summary_gets_a_report_that_says_so(tmp_path: Path) -> None:
    bucket = FileStorage(tmp_path / "bucket")
    registry = Registry(f"{bucket.uri}/models", storage=bucket.child("models"))
    publish_champion(registry, with_summary=False)

    report = check_drift([], from_item, registry, bucket, WINDOW)

    assert report["status"] == STATUS_NO_SUMMARY and report["alarm"] is False and "retrain" in report["message"]


def publish_champion(registry: Registry, *, with_summary: bool) -> None:
    files = {"model.npz": b"model"}
    if with_summary:
        files[SUMMARY_FILE] = json.dumps(drift_data.summary()).encode()
    registry.publish(ModelPackage(files, {"version": "v1", "data": {"snapshot_id": "snap-1"}}))
    registry.promote("v1", reason="test")


def test_a_past_window_comes_from_the_event_and_bad_values_name_the_field() -> None:
    window = window_for({"window_end": "2024-05-02T00:00:00Z", "window_hours": 6})
    assert window.start_text == "2024-05-01T18:00:00.000000Z" and window.end_text == "2024-05-02T00:00:00.000000Z"
    with pytest.raises(ValidationError) as bad:
        window_for({"window_hours": "a week"})
    assert "window_hours" in bad.value.errors
    with pytest.raises(ValidationError) as bad_end:
        window_for({"window_end": "yesterday"})
    assert "window_end" in bad_end.value.errors


# -- the trigger on a drift alarm ---------------------------------------------------------------
def test_the_alarm_event_asks_for_a_retrain_and_other_events_do_not() -> None:
    alarm = json.loads((EVENTS / "schedule_trigger_drift_alarm.json").read_text())
    request = retrain_request(alarm)
    assert request is not None and request.alarm == "gemcast-dev-drift"
    back_to_ok = json.loads(json.dumps(alarm))
    back_to_ok["detail"]["state"]["value"] = "OK"
    assert retrain_request(back_to_ok) is None
    assert retrain_request(json.loads((EVENTS / "schedule_trigger_daily.json").read_text())) is None
    incident = {"incident": {"state": "open", "policy_name": "gemcast drift", "started_at": 1714622712}}
    assert retrain_request(incident) is not None
    assert retrain_request({"incident": {**incident["incident"], "state": "closed"}}) is None


def test_an_alarm_trains_on_unchanged_data_once_per_alarm(tmp_path: Path) -> None:
    data = FileStorage(tmp_path / "bucket")
    registry = Registry(f"{data.uri}/models", storage=data.child("models"))
    data.write_bytes("curated/_snapshot.json", json.dumps({"snapshot_id": "snap-a", "accepted": 10}).encode())
    data.write_bytes("models/champion.json", json.dumps({"version": "v1", "snapshot_id": "snap-a"}).encode())
    alarm = retrain_request(json.loads((EVENTS / "schedule_trigger_drift_alarm.json").read_text()))

    scheduled = plan_training(data, registry)
    on_alarm = plan_training(data, registry, alarm)

    assert not scheduled.needed and scheduled.run_key == "snap-a"
    assert on_alarm.needed and "drift alarm gemcast-dev-drift" in on_alarm.reason and "gate" in on_alarm.reason
    assert on_alarm.run_key != "snap-a" and on_alarm.run_key.startswith("snap-a-drift-")
    assert job_name(on_alarm).startswith("gemcast-train-snap-a-drift-")
    # Changed data and an alarm: one job, keyed by the snapshot, as the schedule would start.
    data.write_bytes("curated/_snapshot.json", json.dumps({"snapshot_id": "snap-b", "accepted": 10}).encode())
    assert plan_training(data, registry, alarm).run_key == "snap-b"
    assert TrainingPlan("s", None, True, "r", "d", "m").run_key == "s"
