"""check_drift and retrain_on_drift as deployed (functions-framework), on the Firestore and Cloud
Storage emulators, the Cloud Monitoring stand-in and the CustomJob stand-in."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from gemcast.drift import REPORT_PREFIX, SUMMARY_FILE
from gemcast.gcp import to_document
from gemcast.gcp_monitoring import metric_type
from gemcast.registry import ModelPackage, Registry
from gemcast.storage import GCSStorage
from gemcast_local.gcp_stack import (
    BUCKET,
    PROJECT,
    FunctionServer,
    LocalVertexJobs,
    function_env,
    post_cloud_event,
    pubsub_event,
)
from gemcast_local.gcp_standins import MonitoringStandIn
from gemcast_local.servers import FirestoreEmulator, GcsEmulator, ServerGroup
from tests import drift_data

REPO = Path(__file__).resolve().parents[3]
POLICY = REPO / "gcp" / "monitoring" / "drift" / "drift_score.json"


@pytest.fixture(scope="module")
def monitoring() -> Iterator[MonitoringStandIn]:
    with MonitoringStandIn() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def functions(firestore_emulator: FirestoreEmulator, gcs_emulator: GcsEmulator, vertex_jobs: LocalVertexJobs,
              monitoring: MonitoringStandIn) -> Iterator[dict[str, FunctionServer]]:
    env = function_env(emulators={**firestore_emulator.env(), **gcs_emulator.env()},
                       vertex_api_endpoint=vertex_jobs.url, MONITORING_API_ENDPOINT=monitoring.url)
    servers = {target: FunctionServer(target, env=env) for target in ("check_drift", "retrain_on_drift")}
    group = ServerGroup()
    group.start(*servers.values())
    try:
        yield servers
    finally:
        group.stop()


@pytest.fixture
def cloud(functions: dict[str, FunctionServer], firestore_env: dict[str, str], gcs_env: dict[str, str],
          vertex_jobs: LocalVertexJobs, monitoring: MonitoringStandIn) -> dict[str, Any]:
    from google.cloud import firestore, storage  # type: ignore[attr-defined]

    vertex_jobs.jobs.clear()
    monitoring.series.clear()
    gcs = storage.Client(project=PROJECT)
    gcs.create_bucket(BUCKET)
    data = GCSStorage(BUCKET, client=gcs)
    data.write_bytes("curated/_snapshot.json", json.dumps({"snapshot_id": "snap-1", "accepted": 4999}).encode())
    registry = Registry(f"gs://{BUCKET}/models", storage=data.child("models"))
    registry.publish(ModelPackage({"model.npz": b"m", SUMMARY_FILE: json.dumps(drift_data.summary()).encode()},
                                  {"version": "v1", "data": {"snapshot_id": "snap-1"}}))
    registry.promote("v1", reason="test")
    return {"functions": functions, "firestore": firestore.Client(project=PROJECT), "data": data,
            "jobs": vertex_jobs, "monitoring": monitoring}


def log_day(cloud: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    batch = cloud["firestore"].batch()
    for record in drift_data.records(rows, start=time.time() - 6 * 3600, step_s=30):
        batch.set(cloud["firestore"].collection("predictions").document(record["request_id"]), to_document(record))
    batch.commit()


def check(cloud: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(cloud["functions"]["check_drift"].url, json={}, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def alert(cloud: dict[str, Any], state: str) -> int:
    """The Pub/Sub CloudEvent a notification channel's message becomes."""
    incident = {"incident": {"incident_id": "0.abc", "state": state, "started_at": 1714622712,
                             "policy_name": "gemcast: drift of the prediction log above the threshold"},
                "version": "1.2"}
    event = pubsub_event("gemcast-local-drift-alerts", json.dumps(incident).encode())
    return post_cloud_event(cloud["functions"]["retrain_on_drift"].url, event)


def test_a_shifted_day_breaches_the_alert_policy_and_the_incident_starts_a_job(cloud: dict[str, Any]) -> None:
    log_day(cloud, drift_data.over_two_carats(300))

    result = check(cloud)

    assert result["status"] == "drift" and result["alarm"] is True and result["counts"]["stones"] == 300
    policy = json.loads(POLICY.read_text())["conditions"][0]["conditionThreshold"]
    scores = cloud["monitoring"].values(metric_type("DriftScore"))
    (score,) = scores.values()
    assert f'metric.type = "{metric_type("DriftScore")}"' in policy["filter"]
    assert score == result["score"] > policy["thresholdValue"]
    assert len(cloud["monitoring"].values(metric_type("FeatureDrift"))) == 10
    assert json.loads(cloud["data"].read_bytes(f"{REPORT_PREFIX}latest.json"))["alarm"] is True

    assert alert(cloud, "open") == 200
    assert alert(cloud, "open") == 200  # Pub/Sub delivers at least once: one job still
    (job,) = cloud["jobs"].jobs.values()
    assert "drift" in job.spec["displayName"]


def test_a_day_like_the_training_data_stays_under_the_threshold_and_a_closed_incident_does_nothing(
    cloud: dict[str, Any],
) -> None:
    log_day(cloud, drift_data.like_training(300))

    result = check(cloud)

    assert result["status"] == "ok" and result["alarm"] is False
    (score,) = cloud["monitoring"].values(metric_type("DriftScore")).values()
    assert score < json.loads(POLICY.read_text())["conditions"][0]["conditionThreshold"]["thresholdValue"]
    assert alert(cloud, "closed") == 200 and cloud["jobs"].jobs == {}
