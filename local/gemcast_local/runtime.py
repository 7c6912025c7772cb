"""The one local Lambda runtime: what Lambda gives a function, played on one machine.

Every local caller of a handler goes through here: the local gateway, ``make invoke``, the
stack's S3-notification player and the tests.

- :class:`LambdaContext`: the context object handlers and powertools read;
- :func:`function_environment`: the function's variables from template.yaml (Globals, then its
  own), every intrinsic resolved by :class:`Resolver` against the local values; one rule for
  what cannot be resolved: a :class:`TemplateError` naming the function and the variable;
- :func:`import_handler`: functions/<name>/app.py imported afresh in that environment (a cold
  start), with the local seams put in (:func:`install_local_seams`);
- :func:`environment`: the scope in which a function runs (its cold start and every call);
- :class:`LocalFunction`: the three together, called as Lambda calls a container: one event
  at a time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from gemcast_local.template import TemplateError, is_intrinsic, resources_of_type

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO / "functions"
ACCOUNT_ID = "123456789012"  # moto's default account
REGION = "us-east-1"
FUNCTION_TYPE = "AWS::Serverless::Function"


# ----------------------------------------------------------------------------- the context


@dataclass
class LambdaContext:
    """The attributes of a Lambda context that handlers and powertools read."""

    function_name: str = "gemcast-local"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    timeout_s: float = 30.0
    log_stream_name: str = "local"
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.started + self.timeout_s - time.monotonic()) * 1000))


# ----------------------------------------------------------------------------- intrinsics


class Resolver:
    """Resolves ``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, ``Fn::Join``, ``Fn::If`` (with the
    template's Conditions) against known local values.

    ``values`` maps a Ref name (parameter, pseudo parameter or logical id) to its value and
    ``"Logical.Attribute"`` to a GetAtt value. Anything unknown is a TemplateError naming it.
    """

    def __init__(self, values: Mapping[str, str], conditions: Mapping[str, Any] | None = None) -> None:
        self.values = dict(values)
        self.conditions = dict(conditions or {})

    def resolve(self, value: Any, where: str) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        if not is_intrinsic(value):
            raise TemplateError(f"{where}: cannot use {value!r} locally")
        ((kind, arg),) = value.items()
        if kind == "Ref":
            return self._lookup(str(arg), where)
        if kind == "Fn::GetAtt":
            parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self._lookup(".".join(str(p) for p in parts), where)
        if kind == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            extra = {k: self.resolve(v, f"{where}.{k}") for k, v in local.items()}
            return re.sub(r"\$\{([^}!]+)\}", lambda m: extra.get(m.group(1)) or self._lookup(m.group(1), where), text)
        if kind == "Fn::Join":
            separator, items = arg
            return str(separator).join(self.resolve(item, where) for item in items)
        if kind == "Fn::If":
            name, then, otherwise = arg
            return self.resolve(then if self.condition(str(name), where) else otherwise, where)
        raise TemplateError(f"{where}: {kind} is not supported by the local stack")

    def condition(self, name: str, where: str) -> bool:
        if name not in self.conditions:
            raise TemplateError(f"{where}: the template has no condition {name}")
        return self._truth(self.conditions[name], f"{where} (condition {name})")

    def _truth(self, value: Any, where: str) -> bool:
        ((kind, arg),) = value.items()
        if kind == "Fn::Equals":
            return self.resolve(arg[0], where) == self.resolve(arg[1], where)
        if kind == "Fn::Not":
            return not self._truth(arg[0], where)
        if kind == "Fn::And":
            return all(self._truth(a, where) for a in arg)
        if kind == "Fn::Or":
            return any(self._truth(a, where) for a in arg)
        if kind == "Condition":
            return self.condition(str(arg), where)
        raise TemplateError(f"{where}: {kind} is not supported in a local condition")

    def _lookup(self, name: str, where: str) -> str:
        if name not in self.values:
            raise TemplateError(f"{where}: the local stack has no value for {name}")
        return self.values[name]


# ----------------------------------------------------------------------------- environment


def function_logical_id(template: Mapping[str, Any], function: str) -> str:
    """The logical id of the function whose CodeUri is functions/<function>/ (or ``function``
    itself when it is a logical id)."""
    for logical_id, props in resources_of_type(template, FUNCTION_TYPE):
        if logical_id == function or Path(str(props.get("CodeUri", "")).rstrip("/")).name == function:
            return logical_id
    raise TemplateError(f"template.yaml declares no function {function!r} (no CodeUri functions/{function}/)")


def function_folder(template: Mapping[str, Any], logical_id: str) -> str:
    props = template["Resources"][logical_id].get("Properties") or {}
    return Path(str(props.get("CodeUri", "")).rstrip("/")).name


def function_environment(template: Mapping[str, Any], function: str, values: Mapping[str, str]) -> dict[str, str]:
    """The environment the template gives a function (folder name or logical id): Globals,
    then its own variables, each resolved against ``values``; a value the local stack does not
    have is a TemplateError naming the variable."""
    logical_id = function_logical_id(template, function)
    props = dict(template["Resources"][logical_id].get("Properties") or {})
    merged: dict[str, Any] = {}
    globals_env = ((template.get("Globals") or {}).get("Function") or {}).get("Environment") or {}
    merged.update(globals_env.get("Variables") or {})
    merged.update(((props.get("Environment") or {}).get("Variables")) or {})
    resolver = Resolver(values, template.get("Conditions"))
    return {name: resolver.resolve(value, f"{logical_id}.Environment.{name}") for name, value in merged.items()}


_ENV_LOCK = threading.RLock()


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` for the duration; every key it set is put back as it was."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old


# ----------------------------------------------------------------------------- the handler


def import_handler(function: str, env: Mapping[str, str], functions_dir: Path = FUNCTIONS) -> ModuleType:
    """Import functions/<function>/app.py afresh with ``env`` set, as Lambda's cold start would."""
    path = functions_dir / function / "app.py"
    if not path.is_file():
        have = ", ".join(sorted(p.parent.name for p in functions_dir.glob("*/app.py")))
        raise TemplateError(f"no function {function!r}: {path} does not exist (have: {have})")
    name = f"gemcast_fn_{function}_app"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with environment(env):
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    return module


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


def lambda_env(function: str) -> dict[str, str]:
    """What Lambda itself sets in every function's environment."""
    return {"AWS_LAMBDA_FUNCTION_NAME": f"gemcast-local-{function}", "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_DEV": "false"}


class LocalFunction:
    """One function's container: imported once in its environment, then called one event at a
    time (a Lambda container never runs two events at once; powertools keeps the current
    event in the resolver's state)."""

    def __init__(self, function: str, env: Mapping[str, str], *, train_args: Sequence[str] = (),
                 functions_dir: Path = FUNCTIONS, timeout_s: float = 30.0) -> None:
        self.function = function
        self.env = {**lambda_env(function), **env}
        self.timeout_s = timeout_s
        self.module = import_handler(function, self.env, functions_dir)
        install_local_seams(function, self.module, self.env, train_args)
        self.handler: Callable[[Any, Any], Any] = self.module.lambda_handler
        self._lock = threading.Lock()

    @classmethod
    def from_template(cls, template: Mapping[str, Any], function: str, values: Mapping[str, str],
                      base_env: Mapping[str, str], **kwargs: Any) -> LocalFunction:
        """The function with the template's environment over ``base_env`` (the stand-ins' AWS_*)."""
        folder = function_folder(template, function_logical_id(template, function))
        return cls(folder, {**base_env, **function_environment(template, folder, values)}, **kwargs)

    def __call__(self, event: Any, context: LambdaContext | None = None) -> Any:
        context = context or LambdaContext(f"gemcast-local-{self.function}", timeout_s=self.timeout_s)
        # Lambda runs a handler in its function's environment for the container's whole life,
        # not only at import: a client created at first use must see it too.
        with self._lock, environment(self.env):
            return self.handler(event, context)
