"""``gemcast-local drift``: the drift check against the local stack's prediction log, and what the
cloud does with its metric.

The drift function (functions/drift_check/app.py) runs as Lambda would, against the running
stack's table and bucket. CloudWatch then plays its part here: the template's DriftAlarm
(threshold and comparison read from template.yaml) is evaluated on the DriftScore the function
published, and on ALARM the template's DriftAlarmRule is played: the training trigger is
invoked with the alarm's state-change event, and trains locally (gemcast_local.trigger) even
when the data did not change; the job's own gate decides what is promoted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gemcast_local.invoke import EVENTS, REPO, STATE_DIR, InvokeError, invoke
from gemcast_local.provision import LOCAL_PREFIX
from gemcast_local.template import load_template

ALARM = "DriftAlarm"
OK, IN_ALARM, NO_DATA = "OK", "ALARM", "INSUFFICIENT_DATA"
_COMPARE = {
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
}


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
    if score is None:
        return NO_DATA
    threshold, comparison = alarm_rule(template)
    return IN_ALARM if _COMPARE[comparison](float(score), threshold) else OK


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


def run_drift(*, state_dir: Path | None = None, event_file: Path | None = None,
              train_args: Sequence[str] = (), out: Any = None) -> dict[str, Any]:
    """The drift check against the running local stack; on ALARM, the training trigger."""
    state = state_dir or STATE_DIR
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
