"""Run one Lambda function in process with an events/ file, against the local stand-ins.

    python -m gemcast_local.invoke preprocess                # events/preprocess_raw_batch.json
    python -m gemcast_local.invoke preprocess --case key_with_spaces
    make invoke-preprocess CASE=unusable_file

Where the local stack runs (``gemcast up`` wrote .gemcast/stack.json), the function gets the
stack's environment: its moto server, bucket and tables. Otherwise a moto server is started
for the call, the template's tables and a data bucket are created on it, the objects the
event names are uploaded, and everything is stopped afterwards. Either way the function's
``app.lambda_handler`` is called exactly as Lambda would call it, and its response printed.

This module is also where the local runner puts the local stand-ins in the functions' seams:
a training job runs as a subprocess (gemcast_local.trigger), and SageMaker's UpdateEndpoint,
which moto lacks, is applied by :class:`MotoSageMaker`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from gemcast.errors import GemcastError

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO / "functions"
EVENTS = REPO / "events"
STATE_DIR = Path(".gemcast")  # as `gemcast up --state` (its stack.json)
LOCAL_PREFIX = "gemcast-local"

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


def load_handler(function: str, functions_dir: Path = FUNCTIONS) -> ModuleType:
    """Import functions/<function>/app.py afresh, so it reads the current environment."""
    path = functions_dir / function / "app.py"
    if not path.is_file():
        raise InvokeError(f"no function {function!r}: {path} does not exist (have: {', '.join(functions())})")
    module_name = f"gemcast_fn_{function}_app"
    sys.modules.pop(module_name, None)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


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


@dataclass
class LocalContext:
    """What a Lambda context offers to handlers and powertools."""

    function_name: str
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


# ----------------------------------------------------------------------------- local seams


class MotoSageMaker:
    """A SageMaker client for moto, which implements no UpdateEndpoint.

    Every call goes to the real boto3 client (moto); ``update_endpoint`` is checked against
    the SageMaker API model, recorded in ``updates``, then applied as delete + create so that
    ``describe_endpoint`` shows the new config as SageMaker would once the update finished.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.updates: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_endpoint(self, **request: Any) -> dict[str, Any]:
        from botocore.validate import validate_parameters

        model = self._client.meta.service_model.operation_model("UpdateEndpoint")
        validate_parameters(request, model.input_shape)  # the request AWS would get, shape-checked
        self._client.describe_endpoint_config(EndpointConfigName=request["EndpointConfigName"])
        current = self._client.describe_endpoint(EndpointName=request["EndpointName"])
        self.updates.append(request)
        self._client.delete_endpoint(EndpointName=request["EndpointName"])
        self._client.create_endpoint(EndpointName=request["EndpointName"],
                                     EndpointConfigName=request["EndpointConfigName"])
        return {"EndpointArn": current["EndpointArn"]}


def install_local_seams(function: str, module: ModuleType, env: Mapping[str, str],
                        train_args: Sequence[str] = ()) -> None:
    """Put the local stand-ins where the cloud has services moto cannot play."""
    if function == "schedule_trigger":
        from gemcast_local.trigger import local_submitter

        # A training job is the image's train entrypoint as a subprocess, not AWS Batch.
        module.SUBMIT = local_submitter(env=env, extra_args=train_args)  # type: ignore[attr-defined]
    if function == "deploy_model":
        module.SAGEMAKER = MotoSageMaker(module.SAGEMAKER)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- environment

# Values the function's template environment cannot give locally: a deployed stack's names.
_LOCAL_DEFAULTS = {
    "ENDPOINT_NAME": f"{LOCAL_PREFIX}-endpoint",
    "SERVING_IMAGE_URI": "gemcast-serving:local",
    "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/gemcast-local-sagemaker",
    "BATCH_JOB_QUEUE": f"{LOCAL_PREFIX}-training",
    "BATCH_JOB_DEFINITION": f"{LOCAL_PREFIX}-training",
    "ROLLBACK_ALARM_NAMES": "",
}


def local_name(logical_id: str) -> str:
    return f"{LOCAL_PREFIX}-{logical_id}"


def _function_resource(template: Mapping[str, Any], function: str) -> dict[str, Any]:
    for _, resource in template.get("Resources", {}).items():
        props = (resource or {}).get("Properties") or {}
        if resource.get("Type") == "AWS::Serverless::Function" and \
                str(props.get("CodeUri", "")).strip("/").endswith(f"functions/{function}"):
            return dict(props)
    raise InvokeError(f"template.yaml declares no function with CodeUri functions/{function}/")


def function_environment(template: Mapping[str, Any], function: str, resources: Mapping[str, str],
                         overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The function's environment as the template declares it, with local names filled in.

    Literals are kept; ``!Ref <parameter>`` takes the parameter's default; ``!Ref <table or
    queue>`` takes ``resources[logical_id]``; whatever else only a deployed stack knows comes
    from ``overrides`` (the running stack's values) or a local default, or is left out.
    """
    from gemcast_local.template import is_intrinsic

    parameters = template.get("Parameters", {}) or {}
    declared: dict[str, Any] = {}
    globals_env = (template.get("Globals", {}) or {}).get("Function", {}).get("Environment", {})
    declared.update((globals_env or {}).get("Variables", {}) or {})
    own = _function_resource(template, function).get("Environment") or {}
    declared.update(own.get("Variables", {}) or {})
    env: dict[str, str] = {}
    for name, value in declared.items():
        if not is_intrinsic(value):
            env[name] = str(value).lower() if isinstance(value, bool) else str(value)
        elif "Ref" in value and value["Ref"] in resources:
            env[name] = resources[value["Ref"]]
        elif "Ref" in value and "Default" in (parameters.get(value["Ref"]) or {}):
            env[name] = str(parameters[value["Ref"]]["Default"])
        elif name in _LOCAL_DEFAULTS:
            env[name] = _LOCAL_DEFAULTS[name]
    env.update({k: v for k, v in (overrides or {}).items() if k in declared})
    return env


@dataclass
class LocalStack:
    """What a function needs from the stand-ins: ``env`` (AWS_ENDPOINT_URL, keys, region and
    any setting by its variable name) and ``resources`` (template logical id -> local table
    name or queue URL)."""

    env: dict[str, str]
    resources: dict[str, str]
    functions: dict[str, dict[str, str]] = field(default_factory=dict)

    def environment(self, template: Mapping[str, Any], function: str) -> dict[str, str]:
        overrides = {**self.env, **self.functions.get(function, {})}
        aws = {k: v for k, v in self.env.items() if k.startswith("AWS_")}
        return {**aws, **function_environment(template, function, self.resources, overrides)}


def read_state(state_dir: Path) -> LocalStack | None:
    """The running local stack, from its state file; None when there is none or its moto is gone.

    The file is JSON: ``{"env": {...}, "resources": {...}, "functions": {name: {...}}}`` (see
    :class:`LocalStack`); ``gemcast up`` writes it.
    """
    try:
        state = json.loads((state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return None
    env = {k: str(v) for k, v in (state.get("env") or {}).items()}
    url = env.get("AWS_ENDPOINT_URL")
    if not url:
        return None
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=2) as response:
            response.read()
    except OSError:
        return None  # a state file left by a stack that is no longer running
    functions = {name: {k: str(v) for k, v in (values or {}).items()}
                 for name, values in (state.get("functions") or {}).items()}
    return LocalStack(env, {k: str(v) for k, v in (state.get("resources") or {}).items()}, functions)


@contextlib.contextmanager
def scratch_stack(template: Mapping[str, Any]) -> Iterator[LocalStack]:
    """A moto server with the template's tables and queues and a data bucket, for one call."""
    import boto3

    from gemcast_local.servers import MotoServer
    from gemcast_local.template import dynamodb_tables, sqs_queues

    with MotoServer() as moto:
        env = moto.env()
        session = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                        region_name=env["AWS_DEFAULT_REGION"])
        resources: dict[str, str] = {}
        dynamodb = session.client("dynamodb", endpoint_url=moto.url)
        for kwargs in dynamodb_tables(template, name=local_name):
            dynamodb.create_table(**kwargs)
            resources[kwargs["TableName"].removeprefix(f"{LOCAL_PREFIX}-")] = kwargs["TableName"]
        sqs = session.client("sqs", endpoint_url=moto.url)
        for kwargs in sqs_queues(template, name=local_name):
            logical_id = kwargs["QueueName"].removeprefix(f"{LOCAL_PREFIX}-").removesuffix(".fifo")
            resources[logical_id] = sqs.create_queue(**kwargs)["QueueUrl"]
        bucket = f"{LOCAL_PREFIX}-data"
        session.client("s3", endpoint_url=moto.url).create_bucket(Bucket=bucket)
        resources["DataBucket"] = bucket
        env.update(DATA_BUCKET=bucket, REGISTRY_URI=f"s3://{bucket}/models")
        yield LocalStack(env, resources)


def seed_objects(event: Mapping[str, Any], out: Any) -> None:
    """Upload the raw batches an S3 event names when they are missing, so the event is true:
    events/preprocess_objects/<name> where there is one, else data/diamonds.csv."""
    import boto3

    s3 = boto3.client("s3")
    for record in event.get("Records", []):
        from urllib.parse import unquote_plus

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
    with contextlib.ExitStack() as resources:
        local = read_state(state_dir)
        if local is not None:
            print(f"invoking {function} with {path.name} against the local stack ({state_dir})", file=out)
        elif require_stack:
            raise InvokeError(f"no local stack running (no live {state_dir}/stack.json): "
                              "start it with `gemcast up`")
        else:
            print(f"invoking {function} with {path.name} against a moto server started for this call "
                  f"(no running local stack in {state_dir}/)", file=out)
            local = resources.enter_context(scratch_stack(template))
        env = {"POWERTOOLS_SERVICE_NAME": function, "POWERTOOLS_METRICS_NAMESPACE": "gemcast",
               "POWERTOOLS_TRACE_DISABLED": "true", "AWS_LAMBDA_FUNCTION_NAME": f"{LOCAL_PREFIX}-{function}",
               **local.environment(template, function)}
        resources.enter_context(_environment(env))
        if "Records" in event and local.env.get("DATA_BUCKET"):
            event = retarget_s3_event(event, local.env["DATA_BUCKET"])
            seed_objects(event, out)
        # The function's logs and metrics (powertools writes them to stdout) go to ``out``, so
        # the caller's stdout carries the response alone.
        with contextlib.redirect_stdout(out):
            module = load_handler(function)
            install_local_seams(function, module, env, train_args)
            return module.lambda_handler(event, LocalContext(f"{LOCAL_PREFIX}-{function}"))


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gemcast_local.invoke",
                                     description="Run one Lambda function locally with an events/ file.")
    parser.add_argument("function", help=f"one of: {', '.join(functions())}")
    parser.add_argument("--case", default=None,
                        help="events/<function>_<case>.json (default: the function's default case)")
    parser.add_argument("--event", type=Path, default=None, help="an event file of your own instead")
    parser.add_argument("--state", type=Path, default=STATE_DIR,
                        help=f"the local stack's state folder (default {STATE_DIR})")
    args = parser.parse_args(argv)
    try:
        response = invoke(args.function, args.case or None, event_file=args.event, state_dir=args.state)
    except GemcastError as exc:
        print(f"invoke {args.function}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(response, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
