"""``gemcast-local drift``: the drift check against the local stack's prediction log, and what the
cloud does with its metric. One flow on either half (``--cloud aws``, the default, or ``gcp``):
the check runs as deployed, its alarm rule is read from the cloud's own configuration and
evaluated on the score it published, and on ALARM the alarm's event reaches the training
trigger, which trains locally even when the data did not change; the job's own gate decides
what is promoted.

AWS (``make demo``): the drift function (functions/drift_check/app.py) runs as Lambda would,
against the running stack's table and bucket. The template's DriftAlarm (threshold and
comparison read from template.yaml) is evaluated on the DriftScore, and the template's
DriftAlarmRule is played: the training trigger is invoked with the alarm's state-change event
(gemcast_local.trigger runs the job).

GCP (``make demo-gcp``): check_drift is POSTed under functions-framework, as Cloud Scheduler
does, on the Firestore emulator's log and the bucket stand-in. Its points are read back from
the Cloud Monitoring stand-in with the filter of gcp/monitoring/drift/drift_score.json, and
that policy's condition (aligner, comparison, threshold) is evaluated on the points this check
wrote, as the AWS path evaluates the one datapoint. An opened incident goes to
retrain_on_drift as the policy's Pub/Sub notification channel delivers it; the CustomJob it
submits runs in the stack's Vertex AI jobs stand-in, and is waited for.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gemcast_local.invoke import EVENTS, REPO, STATE_DIR, InvokeError, invoke
from gemcast_local.provision import LOCAL_PREFIX
from gemcast_local.runtime import environment
from gemcast_local.template import load_template

ALARM = "DriftAlarm"
POLICY = REPO / "gcp" / "monitoring" / "drift" / "drift_score.json"
OK, IN_ALARM, NO_DATA = "OK", "ALARM", "INSUFFICIENT_DATA"
CLOUDS = ("aws", "gcp")
# CloudWatch's and Cloud Monitoring's spellings of the comparisons the local runner evaluates.
_COMPARE = {
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
    "COMPARISON_GT": lambda v, t: v > t,
    "COMPARISON_GE": lambda v, t: v >= t,
}
_ALIGN: dict[str, Callable[[list[float]], float]] = {
    "ALIGN_MAX": max, "ALIGN_MEAN": lambda v: sum(v) / len(v), "ALIGN_MIN": min,
}
JOB_DONE = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}


def alarm_rule(template: Mapping[str, Any]) -> tuple[float, str]:
    """The DriftAlarm's threshold (a parameter's default, or a number) and comparison."""
    props = template["Resources"][ALARM]["Properties"]
    threshold = props["Threshold"]
    if isinstance(threshold, dict) and "Ref" in threshold:
        threshold = template["Parameters"][threshold["Ref"]]["Default"]
    comparison = str(props["ComparisonOperator"])
    if comparison not in _COMPARE:
        raise InvokeError(f"{ALARM}: the local runner cannot evaluate {comparison}")
    return float(threshold), comparison


def alarm_state(score: float | None, template: Mapping[str, Any]) -> str:
    """What CloudWatch would decide from one datapoint (none: missing data, not breaching)."""
    threshold, comparison = alarm_rule(template)
    return _state(score, comparison, threshold)


def _state(value: float | None, comparison: str, threshold: float) -> str:
    if value is None:
        return NO_DATA
    return IN_ALARM if _COMPARE[comparison](float(value), threshold) else OK


def policy_rule(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The drift policy's one threshold condition: filter, aligner, comparison, threshold."""
    conditions = policy.get("conditions") or []
    if len(conditions) != 1 or "conditionThreshold" not in conditions[0]:
        raise InvokeError(f"{POLICY.name}: the local runner evaluates one conditionThreshold, "
                          f"found {len(conditions)} conditions")
    rule = conditions[0]["conditionThreshold"]
    aligner = str(rule["aggregations"][0]["perSeriesAligner"])
    if rule["comparison"] not in _COMPARE or aligner not in _ALIGN:
        raise InvokeError(f"{POLICY.name}: the local runner cannot evaluate {rule['comparison']} of {aligner}")
    return {"filter": str(rule["filter"]), "aligner": aligner, "comparison": str(rule["comparison"]),
            "threshold": float(rule["thresholdValue"]), "name": str(conditions[0].get("displayName", ""))}


def policy_state(points: Sequence[float], policy: Mapping[str, Any]) -> tuple[str, float | None]:
    """What Cloud Monitoring would decide from the points of one alignment period (the aligned
    value, or missing data, which EVALUATION_MISSING_DATA_INACTIVE does not count as breaching)."""
    rule = policy_rule(policy)
    value = float(_ALIGN[rule["aligner"]](list(points))) if points else None
    return _state(value, rule["comparison"], rule["threshold"]), value


def incident_notification(value: float, policy: Mapping[str, Any], project: str,
                          now: datetime | None = None) -> dict[str, Any]:
    """The opened incident a Pub/Sub notification channel publishes for this policy (schema 1.2)."""
    rule = policy_rule(policy)
    moment = int((now or datetime.now(UTC)).timestamp())
    metric = rule["filter"].split('metric.type = "', 1)[-1].split('"', 1)[0]
    return {"version": "1.2", "incident": {
        "incident_id": f"0.local{moment}", "scoping_project_id": project, "state": "open",
        "started_at": moment, "ended_at": None, "policy_name": str(policy.get("displayName", "")),
        "condition_name": rule["name"], "threshold_value": str(rule["threshold"]), "observed_value": str(value),
        "metric": {"type": metric, "displayName": metric.rsplit("/", 1)[-1]},
        "resource": {"type": "global", "labels": {"project_id": project}},
        "summary": f"{metric} for {project} with value {value} is above the threshold of {rule['threshold']}",
    }}


def alarm_event(score: float, template: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The "CloudWatch Alarm State Change" event DriftAlarmRule matches, for this local alarm."""
    event: dict[str, Any] = json.loads((EVENTS / "schedule_trigger_drift_alarm.json").read_text())
    threshold, _ = alarm_rule(template)
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    name = f"{LOCAL_PREFIX}-drift"
    event["time"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    event["resources"] = [f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}"]
    event["detail"]["alarmName"] = name
    event["detail"]["state"] = {
        "value": IN_ALARM,
        "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000",
        "reason": f"Threshold Crossed: 1 datapoint [{score}] was greater than the threshold ({threshold}).",
    }
    return event


def run_drift(*, cloud: str = "aws", state_dir: Path | None = None, event_file: Path | None = None,
              train_args: Sequence[str] = (), out: Any = None) -> dict[str, Any]:
    """The drift check against the running local stack; on ALARM, the training trigger."""
    if cloud not in CLOUDS:
        raise InvokeError(f"cloud must be one of {', '.join(CLOUDS)}, got {cloud!r}")
    state = state_dir or STATE_DIR
    if cloud == "gcp":
        if train_args:
            raise InvokeError(f"{' '.join(train_args)}: the GCP stack's jobs train with the stack's own options "
                              "(gemcast-local up --cloud gcp --kind K --budget S)")
        return _run_drift_gcp(state, event_file)
    template = load_template(REPO / "template.yaml")
    report: dict[str, Any] = invoke("drift_check", None, event_file=event_file, state_dir=state,
                                    require_stack=True, out=out)
    result: dict[str, Any] = {"drift": report, "alarm": alarm_state(report.get("score"), template)}
    if result["alarm"] == IN_ALARM:
        path = state / "drift_alarm_event.json"
        path.write_text(json.dumps(alarm_event(float(report["score"]), template), indent=2))
        result["trigger"] = invoke("schedule_trigger", event_file=path, state_dir=state, train_args=train_args,
                                   require_stack=True, out=out)
    return result


# -- GCP ---------------------------------------------------------------------------------------------
def _http(url: str, body: Any = None, *, timeout_s: float = 600) -> dict[str, Any]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return dict(json.loads(response.read() or b"{}"))
    except urllib.error.HTTPError as exc:
        raise InvokeError(f"{url}: HTTP {exc.code} {exc.read().decode('utf-8', 'replace')[:500]}") from exc


def policy_points(monitoring_url: str, project: str, policy: Mapping[str, Any], since: datetime,
                  until: datetime) -> list[float]:
    """The points the policy's filter selects between ``since`` and ``until``, through the
    Cloud Monitoring API (ListTimeSeries) of the stack's stand-in."""
    from google.cloud import monitoring_v3

    from gemcast.gcp_monitoring import metric_client

    request = monitoring_v3.ListTimeSeriesRequest({
        "name": f"projects/{project}", "filter": policy_rule(policy)["filter"],
        "interval": {"start_time": {"seconds": int(since.timestamp())},
                     "end_time": {"seconds": int(until.timestamp()) + 1}},
        "view": monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
    })
    values = []
    for series in metric_client(monitoring_url).list_time_series(request=request, timeout=30):
        for point in series.points:
            if int(since.timestamp()) <= point.interval.end_time.timestamp() <= until.timestamp() + 1:
                values.append(float(point.value.double_value))
    return values


def _run_drift_gcp(state_dir: Path, event_file: Path | None) -> dict[str, Any]:
    from gemcast.registry import Registry
    from gemcast.storage import GCSStorage
    from gemcast.trigger import plan_training, retrain_request
    from gemcast_local.gcp_stack import function_env, post_cloud_event, pubsub_event, read_state

    stack = read_state(state_dir / "gcp")
    functions, project, bucket = stack["functions"], str(stack["project"]), str(stack["bucket"])
    policy = json.loads(POLICY.read_text())
    body = json.loads(event_file.read_text()) if event_file else {"source": "schedule"}
    started = datetime.now(UTC).replace(microsecond=0)
    report = _http(functions["check_drift"], body)  # as Cloud Scheduler POSTs it
    points = policy_points(stack["monitoring"], project, policy, started, datetime.now(UTC))
    alarm, value = policy_state(points, policy)
    result: dict[str, Any] = {"drift": report, "alarm": alarm, "policy_value": value}
    if alarm != IN_ALARM:
        return result
    assert value is not None
    notification = incident_notification(value, policy, project)
    with environment({k: str(v) for k, v in stack["env"].items()}):
        from google.cloud import firestore, storage  # type: ignore[attr-defined]

        gcs = storage.Client(project=project)
        data = GCSStorage(bucket, client=gcs)
        registry = Registry(f"gs://{bucket}/models", storage=data.child("models"))
        # The run key the trigger derives from this incident: its job is recorded under it.
        plan = plan_training(data, registry, retrain_request(notification))
        post_cloud_event(functions["retrain_on_drift"],
                         pubsub_event(f"{LOCAL_PREFIX}-drift-alerts", json.dumps(notification).encode(),
                                      project=project))
        snapshots = function_env(emulators={}, vertex_api_endpoint="")["FIRESTORE_SNAPSHOTS_COLLECTION"]
        claims = firestore.Client(project=project).collection(snapshots)
        claim = claims.document(str(plan.run_key)).get().to_dict() if plan.run_key else None
    trigger: dict[str, Any] = {"incident": notification["incident"], "plan": plan.as_dict(),
                               "submitted": bool(claim and claim.get("job"))}
    if trigger["submitted"]:
        assert claim is not None
        job = dict(claim["job"])
        trigger["job"] = {**job, "state": wait_for_job(str(stack["jobs"]), str(job["job_name"]))}
    result["trigger"] = trigger
    return result


def wait_for_job(jobs_url: str, job_name: str, timeout_s: float = 1800, poll_s: float = 1.0) -> str:
    """Poll the CustomJob (customJobs.get) until it ends; its final state."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = str(_http(f"{jobs_url}/v1/{job_name}")["state"])
        if state in JOB_DONE or time.monotonic() > deadline:
            return state
        time.sleep(poll_s)
