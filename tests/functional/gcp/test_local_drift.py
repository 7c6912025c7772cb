"""`gemcast-local drift --cloud gcp` on the GCP stand-ins: the alert policy and the retraining.

The GCP twin of tests/functional/test_drift_check.py. A champion is trained for real (linear,
on 800 stones of the bundled data, through the curated data as ingest_upload writes it), so its
package holds the training summary. check_drift and retrain_on_drift run under
functions-framework on the Firestore and Cloud Storage emulators, with the Cloud Monitoring
stand-in and the Vertex AI jobs stand-in running the CustomJob as a local process, as
`make demo-gcp` starts them. A day of logged stones over 2 ct then breaches the condition of
gcp/monitoring/drift/drift_score.json and the incident gives a training job that the job's own
gate judges; a day of stones like the training data gives neither.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gemcast.drift import REPORT_PREFIX
from gemcast.gcp import to_document
from gemcast.ingest import ingest_object
from gemcast.pipeline import Progress, run_training
from gemcast.registry import Registry
from gemcast.storage import GCSStorage
from gemcast_local.cli import main as local_main
from gemcast_local.drift import POLICY, policy_rule, policy_state
from gemcast_local.gcp_stack import (
    BUCKET,
    DRIFT_ENTRY_POINTS,
    PROJECT,
    FunctionServer,
    LocalVertexJobs,
    function_env,
    write_state,
)
from gemcast_local.gcp_standins import MonitoringStandIn
from gemcast_local.servers import FirestoreEmulator, GcsEmulator, ServerGroup
from tests import drift_data

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def standins(firestore_emulator: FirestoreEmulator, gcs_emulator: GcsEmulator,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """What `make demo-gcp` adds for drift: the Monitoring stand-in, the jobs stand-in running
    jobs (a small search, as the stack's laptop options), check_drift and retrain_on_drift."""
    emulators = {**firestore_emulator.env(), **gcs_emulator.env(), "GOOGLE_CLOUD_PROJECT": PROJECT}
    logs = tmp_path_factory.mktemp("gcp-drift")
    with MonitoringStandIn() as monitoring, LocalVertexJobs(
        env=emulators, extra_args=["--kind", "linear", "--budget", "1", "--trials", "1"], log_dir=logs,
    ) as jobs:
        env = function_env(emulators=emulators, vertex_api_endpoint=jobs.url, MONITORING_API_ENDPOINT=monitoring.url)
        servers = {t: FunctionServer(t, env=env, log_path=logs / f"{t}.log") for t in DRIFT_ENTRY_POINTS}
        group = ServerGroup()
        group.start(*servers.values())
        try:
            yield {"emulators": emulators, "monitoring": monitoring, "jobs": jobs, "functions": servers}
        finally:
            group.stop()


@pytest.fixture
def stack(standins: dict[str, Any], firestore_env: dict[str, str], gcs_env: dict[str, str],
          tmp_path: Path) -> dict[str, Any]:
    """A bucket with curated data and a trained champion, and the state file the GCP stack writes."""
    from google.cloud import firestore, storage  # type: ignore[attr-defined]

    standins["monitoring"].series.clear()
    standins["jobs"].jobs.clear()
    gcs = storage.Client(project=PROJECT)
    gcs.create_bucket(BUCKET)
    data = GCSStorage(BUCKET, client=gcs)
    first_800 = b"".join((REPO / "data" / "diamonds.csv").read_bytes().splitlines(keepends=True)[:801])
    data.write_bytes("raw/batch.csv", first_800)
    ingest_object(data, "raw/batch.csv", NoInventory())
    outcome = run_training(f"gs://{BUCKET}/curated/", f"gs://{BUCKET}/models", kind="linear", budget_s=1,
                           progress=Progress(emit=lambda _m: None))
    assert outcome.promoted
    workdir = tmp_path / "gcp"
    workdir.mkdir()
    write_state(workdir, env=standins["emulators"],
                functions={t: f.url for t, f in standins["functions"].items()},
                jobs_url=standins["jobs"].url, monitoring_url=standins["monitoring"].url)
    registry = Registry(f"gs://{BUCKET}/models", storage=data.child("models"))
    return {"state": tmp_path, "data": data, "registry": registry, "champion": outcome.version,
            "firestore": firestore.Client(project=PROJECT), "jobs": standins["jobs"]}


def log_day(stack: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """The stones as the api function logged them over the last hours (inside the last day)."""
    batch = stack["firestore"].batch()
    for record in drift_data.records(rows, start=time.time() - 6 * 3600, step_s=30):
        batch.set(stack["firestore"].collection("predictions").document(record["request_id"]), to_document(record))
    batch.commit()


def drift(stack: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert local_main(["drift", "--cloud", "gcp", "--state", str(stack["state"])]) == 0
    return dict(json.loads(capsys.readouterr().out))


def test_a_day_over_two_carats_breaches_the_policy_and_the_incident_starts_a_job_the_gate_judges(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    log_day(stack, drift_data.over_two_carats(300))

    result = drift(stack, capsys)

    report, trigger = result["drift"], result["trigger"]
    rule = policy_rule(json.loads(POLICY.read_text()))
    assert report["status"] == "drift" and report["alarm"] is True and report["counts"]["stones"] == 300
    # The policy's value is the metric read back through Cloud Monitoring, not the function's answer.
    assert result["alarm"] == "ALARM" and result["policy_value"] == report["score"] > rule["threshold"]
    assert trigger["incident"]["state"] == "open" and trigger["incident"]["policy_name"].startswith("gemcast: drift")
    # The data did not change, yet the incident gave a job; the job's gate decided.
    assert trigger["submitted"] is True and "drift alarm" in trigger["plan"]["reason"]
    assert trigger["plan"]["snapshot_id"] == trigger["plan"]["champion_snapshot_id"]
    assert trigger["job"]["state"] == "JOB_STATE_SUCCEEDED" and "drift" in trigger["job"]["display_name"]
    (job,) = stack["jobs"].jobs.values()
    assert job.name == trigger["job"]["job_name"]
    retrained = [v for v in stack["registry"].versions() if v != stack["champion"]]
    assert len(retrained) == 1 and "gate" in stack["registry"].manifest(retrained[0])
    latest = json.loads(stack["data"].read_bytes(f"{REPORT_PREFIX}latest.json"))
    assert latest["worst_feature"] in {"carat", "x", "y", "z", "price"} and latest["alarm"] is True


def test_a_day_like_the_training_data_gives_no_incident_and_no_job(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    log_day(stack, drift_data.like_training(300))

    result = drift(stack, capsys)

    assert result["drift"]["status"] == "ok" and result["alarm"] == "OK" and "trigger" not in result
    assert result["policy_value"] == result["drift"]["score"] < policy_rule(json.loads(POLICY.read_text()))["threshold"]
    assert stack["jobs"].jobs == {}


def test_a_window_with_too_few_stones_is_missing_data_for_the_policy(
    stack: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    log_day(stack, drift_data.over_two_carats(20))

    result = drift(stack, capsys)

    assert result["drift"]["status"] == "insufficient_data" and result["alarm"] == "INSUFFICIENT_DATA"
    assert result["policy_value"] is None and "trigger" not in result and stack["jobs"].jobs == {}


def test_the_policy_condition_is_read_from_gcp_monitoring() -> None:
    policy = json.loads(POLICY.read_text())
    rule = policy_rule(policy)
    assert rule["comparison"] == "COMPARISON_GT" and rule["aligner"] == "ALIGN_MAX"
    assert policy_state([0.1, rule["threshold"] + 0.01], policy) == ("ALARM", rule["threshold"] + 0.01)
    assert policy_state([rule["threshold"]], policy)[0] == "OK"
    assert policy_state([], policy) == ("INSUFFICIENT_DATA", None)


def test_the_gcp_stack_trains_with_its_own_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert local_main(["drift", "--cloud", "gcp", "--state", str(tmp_path), "--kind", "linear"]) == 2
    assert "--kind=linear: the GCP stack's jobs train with the stack's own options" in capsys.readouterr().err


class NoInventory:
    def put_stones(self, stones: Any) -> int:
        return len(list(stones))

    def similar(self, *args: Any) -> list[dict[str, Any]]:
        return []
