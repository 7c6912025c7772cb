"""The drift alarm is one rule on both clouds, and gcp/deploy.sh's drift step wires it to the trigger."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gemcast.gcp_monitoring import metric_type
from gemcast_local.drift import alarm_rule
from gemcast_local.template import load_template

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "gcp" / "monitoring" / "drift" / "drift_score.json"


def test_the_gcp_alert_policy_and_the_aws_alarm_share_the_threshold_and_the_metric() -> None:
    template = load_template(REPO / "template.yaml")
    threshold, comparison = alarm_rule(template)
    (condition,) = json.loads(POLICY.read_text())["conditions"]
    rule = condition["conditionThreshold"]
    assert rule["thresholdValue"] == threshold and comparison == "GreaterThanThreshold"
    assert rule["comparison"] == "COMPARISON_GT"
    assert template["Resources"]["DriftAlarm"]["Properties"]["MetricName"] == "DriftScore"
    assert f'metric.type = "{metric_type("DriftScore")}"' in rule["filter"]
    # Missing data (a window with too few stones) is not drift, on either cloud.
    assert template["Resources"]["DriftAlarm"]["Properties"]["TreatMissingData"] == "notBreaching"
    assert rule["evaluationMissingData"] == "EVALUATION_MISSING_DATA_INACTIVE"
    dashboard = json.loads((POLICY.parent / "dashboard.json").read_text())
    (drift_tile, *_rest) = dashboard["mosaicLayout"]["tiles"]
    assert drift_tile["widget"]["xyChart"]["thresholds"][0]["value"] == threshold
    assert "DriftScore" in template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    pattern = template["Resources"]["DriftAlarmRule"]["Properties"]["EventPattern"]
    assert pattern["detail"]["state"]["value"] == ["ALARM"]
    (target,) = template["Resources"]["DriftAlarmRule"]["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["ScheduleTriggerFunction", "Arn"]}


def drift_step(tmp_path: Path) -> list[list[str]]:
    """The commands of `DRY_RUN=1 gcp/deploy.sh dev drift`."""
    out = subprocess.run(["bash", str(REPO / "gcp" / "deploy.sh"), "dev", "drift"], cwd=REPO, capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "DRY_RUN": "1", "GCP_BUILD_DIR": str(tmp_path)}).stdout
    return [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ")]


def flag(command: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in command if a.startswith(f"--{name}=")]
    return value


@pytest.mark.skipif(shutil.which("bash") is None, reason="gcp/deploy.sh needs bash")
def test_the_drift_step_notifies_the_topic_that_starts_retrain_on_drift(tmp_path: Path) -> None:
    commands = drift_step(tmp_path)
    channel = next(c for c in commands if c[:5] == ["gcloud", "beta", "monitoring", "channels", "create"])
    retrain = next(c for c in commands if c[:3] == ["gcloud", "functions", "deploy"]
                   and flag(c, "entry-point") == "retrain_on_drift")
    policy = next(c for c in commands if c[:5] == ["gcloud", "alpha", "monitoring", "policies", "create"])
    assert flag(channel, "type") == "pubsub"
    assert flag(channel, "channel-labels") == f"topic=projects/gemcast-dev/topics/{flag(retrain, 'trigger-topic')}"
    assert flag(policy, "policy-from-file") == "gcp/monitoring/drift/drift_score.json"
    jobs = {c[5]: flag(c, "uri") for c in commands if c[:5] == ["gcloud", "scheduler", "jobs", "create", "http"]}
    assert jobs == {"gemcast-dev-drift-check": jobs["gemcast-dev-drift-check"]}
    assert jobs["gemcast-dev-drift-check"].endswith("/gemcast-dev-check-drift")


@pytest.mark.skipif(shutil.which("bash") is None, reason="gcp/deploy.sh needs bash")
def test_the_champion_event_and_the_canary_schedule_share_the_topic_of_roll_champion(tmp_path: Path) -> None:
    """The registry's champion.json starts the canary (the bucket's notification), the schedule
    publishes on the same topic to watch it; the function tells the two apart."""
    commands = drift_step(tmp_path)
    roll = next(c for c in commands if c[:3] == ["gcloud", "functions", "deploy"]
                and flag(c, "entry-point") == "roll_champion")
    topic = flag(roll, "trigger-topic")
    assert "--retry" in roll and "--trigger-http" not in roll
    notification = next(c for c in commands if c[:5] == ["gcloud", "storage", "buckets", "notifications", "create"])
    assert notification[5] == "gs://gemcast-dev-data" and flag(notification, "topic").endswith(f"/topics/{topic}")
    assert flag(notification, "event-types") == "OBJECT_FINALIZE"
    assert flag(notification, "object-prefix") == "models/champion.json"  # REGISTRY_URI gs://gemcast-dev-data/models
    job = next(c for c in commands if c[:5] == ["gcloud", "scheduler", "jobs", "create", "pubsub"])
    assert job[5] == "gemcast-dev-canary" and flag(job, "topic") == topic
    assert json.loads(flag(job, "message-body")) == {"source": "schedule"}
