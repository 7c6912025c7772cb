"""Run one Lambda function in process with an events/ file, against the local stand-ins.

    python -m gemcast_local.invoke preprocess                # events/preprocess_raw_batch.json
    python -m gemcast_local.invoke preprocess --case key_with_spaces
    make invoke-preprocess CASE=unusable_file

Where the local stack runs (``gemcast-local up`` wrote .gemcast/stack.json), the function gets
the stack's environment: its moto server, bucket and tables. Otherwise a moto server is started
for the call, the template's resources are provisioned on it (gemcast_local.provision), the
objects the event names are uploaded, and everything is stopped afterwards. Either way the
function runs in the one local Lambda runtime (gemcast_local.runtime), and its response is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from gemcast.errors import GemcastError
from gemcast_local.runtime import FUNCTIONS, REPO, LocalFunction

EVENTS = REPO / "events"
STATE_DIR = Path(".gemcast")  # as `gemcast-local up --state` (its stack.json)

# The case `make invoke-<function>` runs when CASE is not given.
DEFAULT_CASES = {
    "preprocess": "raw_batch",
    "schedule_trigger": "daily",
    "deploy_model": "champion_changed",
    "auth_pre_signup": "allowed",
    "predict_proxy": "one_stone",
    "similar": "five",
}


class InvokeError(GemcastError):
    """No such function or event, or the local stack's state cannot be used."""


# ----------------------------------------------------------------------------- functions, events


def functions() -> list[str]:
    """Every function folder that has an app.py."""
    return sorted(p.parent.name for p in FUNCTIONS.glob("*/app.py"))


def event_path(function: str, case: str | None = None, events_dir: Path = EVENTS) -> Path:
    """events/<function>_<case>.json; without a case the function's default (or only) event."""
    if case:
        path = events_dir / f"{function}_{case}.json"
        if not path.is_file():
            raise InvokeError(f"no event {path.name} in {events_dir} (cases: {', '.join(cases(function))})")
        return path
    plain = events_dir / f"{function}.json"
    if plain.is_file():
        return plain
    default = DEFAULT_CASES.get(function)
    if default and (events_dir / f"{function}_{default}.json").is_file():
        return events_dir / f"{function}_{default}.json"
    found = cases(function, events_dir)
    if not found:
        raise InvokeError(f"no events/{function}_<case>.json for {function}")
    return events_dir / f"{function}_{found[0]}.json"


def cases(function: str, events_dir: Path = EVENTS) -> list[str]:
    prefix = f"{function}_"
    return sorted(p.stem[len(prefix):] for p in events_dir.glob(f"{prefix}*.json"))


def load_event(name: str, events_dir: Path = EVENTS) -> dict[str, Any]:
    """An events/ file by name (``preprocess_raw_batch.json``)."""
    return dict(json.loads((events_dir / name).read_text()))


def retarget_s3_event(event: dict[str, Any], bucket: str) -> dict[str, Any]:
    """The same S3 event, naming ``bucket``: the sample events name a deployed stack's bucket."""
    for record in event.get("Records", []):
        s3 = record.get("s3")
        if isinstance(s3, dict) and "bucket" in s3:
            s3["bucket"]["name"] = bucket
            s3["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    return event


# ----------------------------------------------------------------------------- the stand-ins


@contextlib.contextmanager
def scratch_stack(template: Mapping[str, Any]) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """A moto server with the template's resources, for one call: (its env, the Ref values)."""
    from gemcast_local.provision import boto3_factory, provision
    from gemcast_local.servers import MotoServer

    with MotoServer() as moto:
        env = moto.env()
        yield env, provision(template, boto3_factory(env), env["AWS_DEFAULT_REGION"])


def running_stack(state_dir: Path) -> tuple[dict[str, str], dict[str, str]] | None:
    """(env, Ref values) of the local stack running with ``state_dir``, or None."""
    from gemcast_local.stack import StackError, read_state

    try:
        state = read_state(state_dir)
    except StackError:
        return None
    return ({k: str(v) for k, v in state["env"].items()}, {k: str(v) for k, v in state["values"].items()})


def seed_objects(event: Mapping[str, Any], env: Mapping[str, str], out: Any) -> None:
    """Upload the raw batches an S3 event names when they are missing, so the event is true:
    events/preprocess_objects/<name> where there is one, else data/diamonds.csv."""
    from gemcast_local.provision import boto3_factory

    s3 = boto3_factory(env)("s3")
    for record in event.get("Records", []):
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
        if not key.startswith("raw/"):
            continue
        sample = EVENTS / "preprocess_objects" / Path(key).name
        source = sample if sample.is_file() else REPO / "data" / "diamonds.csv"
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError:
            s3.put_object(Bucket=bucket, Key=key, Body=source.read_bytes())
            print(f"uploaded {source.relative_to(REPO)} to s3://{bucket}/{key}", file=out)


# ----------------------------------------------------------------------------- the call


def invoke(function: str, case: str | None = None, *, event_file: Path | None = None,
           state_dir: Path = STATE_DIR, out: Any = None, train_args: Sequence[str] = (),
           require_stack: bool = False) -> Any:
    """Call functions/<function>/app.py's lambda_handler with the event; return its response.

    Progress, and the function's own logs and metrics, go to ``out`` (default stderr).
    """
    out = out or sys.stderr
    from gemcast_local.template import load_template

    template = load_template(REPO / "template.yaml")
    path = event_file or event_path(function, case)
    event = json.loads(path.read_text())
    with contextlib.ExitStack() as stack:
        local = running_stack(state_dir)
        if local is not None:
            print(f"invoking {function} with {path.name} against the local stack ({state_dir})", file=out)
        elif require_stack:
            raise InvokeError(f"no local stack running (no live {state_dir}/stack.json): "
                              "start it with `gemcast-local up`")
        else:
            print(f"invoking {function} with {path.name} against a moto server started for this call "
                  f"(no running local stack in {state_dir}/)", file=out)
            local = stack.enter_context(scratch_stack(template))
        env, values = local
        if "Records" in event and "DataBucket" in values:
            event = retarget_s3_event(event, values["DataBucket"])
            seed_objects(event, env, out)
        # The function's logs and metrics (powertools writes them to stdout) go to ``out``, so
        # the caller's stdout carries the response alone.
        with contextlib.redirect_stdout(out):
            handler = LocalFunction.from_template(template, function, values, env, train_args=train_args,
                                                  timeout_s=900)
            return handler(event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gemcast_local.invoke",
                                     description="Run one Lambda function locally with an events/ file.")
    parser.add_argument("function", help=f"one of: {', '.join(functions())}")
    parser.add_argument("--case", default=None,
                        help="events/<function>_<case>.json (default: the function's default case)")
    parser.add_argument("--event", type=Path, default=None, help="an event file of your own instead")
    parser.add_argument("--state", type=Path, default=STATE_DIR,
                        help=f"the local stack's state folder (default {STATE_DIR})")
    parser.add_argument("--require-stack", action="store_true",
                        help="fail when no local stack runs, instead of starting a moto server for the call")
    args = parser.parse_args(argv)
    try:
        response = invoke(args.function, args.case or None, event_file=args.event, state_dir=args.state,
                          require_stack=args.require_stack)
    except GemcastError as exc:
        print(f"invoke {args.function}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(response, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
