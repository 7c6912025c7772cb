"""Rolling the SageMaker endpoint to the champion: Model, EndpointConfig, then the Endpoint.

Each champion version gets its own SageMaker Model and EndpointConfig, named from the
endpoint, the version and a short hash of what they contain (image, role, sizes), so

- the serving image loads exactly that version (``REGISTRY_URI`` + ``MODEL_VERSION``) and a
  blue/green swap moves between two known versions, never "whatever champion.json says now";
- a redelivered event, or a second run for the same champion and settings, finds the endpoint
  already on that config and changes nothing;
- a change of image or sizes with the same version still makes a new config to roll to.

Instance-backed endpoints update with a blue/green deployment (canary or all at once) that
SageMaker rolls back by itself when one of the alarms fires. Serverless endpoints get no
``DeploymentConfig``: the guardrails are built for instance fleets (a canary is a percentage of
instance capacity, which a serverless variant does not have) and are not supported there, so
we do not send them. Their update is still SageMaker's default blue/green swap, all at once,
with no alarm-driven rollback (``guardrails`` is False in the result); choose
``ENDPOINT_MODE=instance`` where that rollback matters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

from gemcast.config import Settings
from gemcast.errors import ConfigError, GemcastError, NotFoundError
from gemcast.registry import Registry

logger = logging.getLogger(__name__)

VARIANT = "AllTraffic"  # blue/green needs the same variant name in the old and new configs
NAME_MAX = 63  # SageMaker model, endpoint-config and endpoint names
_BUSY = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"}


class DeploymentError(GemcastError):
    """The endpoint cannot be rolled now (busy, failed) or SageMaker refused the request."""


@dataclass(frozen=True)
class Rollout:
    """Sizes and traffic shifting of a deployment; defaults suit a small pricing model."""

    serverless_memory_mb: int = 2048
    serverless_max_concurrency: int = 5
    instance_count: int = 1
    traffic: str = "CANARY"  # or "ALL_AT_ONCE"
    canary_percent: int = 10
    wait_s: int = 300  # time on the canary before the rest of the traffic moves
    termination_wait_s: int = 300  # the blue fleet stays this long after the shift: rollback window
    max_execution_s: int = 3600
    # What rolls a canary back: the template's EndpointErrorsAlarm (any 5xx) and
    # EndpointLatencyAlarm (p99 above 500 ms) on SageMaker; read from metrics on Vertex AI.
    max_errors: int = 0
    max_p99_latency_ms: float = 500.0

    def check(self) -> None:
        if self.traffic not in {"CANARY", "ALL_AT_ONCE"}:
            raise ConfigError(f"traffic must be CANARY or ALL_AT_ONCE, got {self.traffic!r}")
        if self.serverless_memory_mb not in {1024, 2048, 3072, 4096, 5120, 6144}:
            raise ConfigError(f"serverless memory must be 1024..6144 MB in steps of 1024, "
                              f"got {self.serverless_memory_mb}")


@dataclass
class DeployResult:
    endpoint: str
    version: str
    model: str
    endpoint_config: str
    action: str  # "created", "updated" or "unchanged"
    mode: str
    guardrails: bool  # blue/green traffic shifting with alarm rollback

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resource_name(base: str, version: str, spec: Any) -> str:
    """``<base>-<version>-<hash of spec>``, in SageMaker's alphabet and length."""
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9]+", "-", f"{base}-{version}").strip("-")
    return f"{stem[: NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"


def model_request(name: str, version: str, settings: Settings) -> dict[str, Any]:
    return {
        "ModelName": name,
        "ExecutionRoleArn": settings.sagemaker_role_arn,
        "PrimaryContainer": {
            "Image": settings.serving_image_uri,
            # The serving image reads these (gemcast.container.serve_arguments).
            "Environment": {"REGISTRY_URI": settings.registry_uri, "MODEL_VERSION": version},
        },
        "Tags": [{"Key": "gemcast:version", "Value": version}],
    }


def variant(model_name: str, settings: Settings, rollout: Rollout) -> dict[str, Any]:
    base: dict[str, Any] = {"VariantName": VARIANT, "ModelName": model_name}
    if settings.endpoint_mode == "serverless":
        base["ServerlessConfig"] = {
            "MemorySizeInMB": rollout.serverless_memory_mb,
            "MaxConcurrency": rollout.serverless_max_concurrency,
        }
    else:
        base.update(InstanceType=settings.endpoint_instance_type,
                    InitialInstanceCount=rollout.instance_count, InitialVariantWeight=1.0)
    return base


def deployment_config(settings: Settings, rollout: Rollout) -> dict[str, Any] | None:
    """The blue/green policy with alarm rollback; None for serverless (see the module docstring)."""
    if settings.endpoint_mode == "serverless":
        return None
    routing: dict[str, Any] = {"Type": rollout.traffic}
    if rollout.traffic == "CANARY":
        routing.update(WaitIntervalInSeconds=rollout.wait_s,
                       CanarySize={"Type": "CAPACITY_PERCENT", "Value": rollout.canary_percent})
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": rollout.termination_wait_s,
            "MaximumExecutionTimeoutInSeconds": rollout.max_execution_s,
        }
    }
    if settings.rollback_alarm_names:
        config["AutoRollbackConfiguration"] = {
            "Alarms": [{"AlarmName": name} for name in settings.rollback_alarm_names]
        }
    return config


def _code(exc: Exception) -> tuple[str, str]:
    response = getattr(exc, "response", {}) or {}
    error = response.get("Error", {})
    return str(error.get("Code", "")), str(error.get("Message", ""))


def _create_once(create: Any, request: dict[str, Any], what: str) -> None:
    """Create, or accept that an earlier run (a redelivered event) already did."""
    from botocore.exceptions import ClientError

    try:
        create(**request)
    except ClientError as exc:
        code, message = _code(exc)
        if code == "ValidationException" and "already exist" in message.lower():
            logger.info("%s already exists; reusing it", what)
            return
        raise DeploymentError(f"creating {what}: {code}: {message}") from exc


def _describe_endpoint(client: Any, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return dict(client.describe_endpoint(EndpointName=name))
    except ClientError as exc:
        code, message = _code(exc)
        if code == "ValidationException" and "could not find" in message.lower():
            return None
        raise


def deploy_champion(client: Any, registry: Registry, settings: Settings,
                    rollout: Rollout | None = None) -> DeployResult:
    """Put the registry's champion behind ``settings.endpoint_name``; see the module docstring."""
    rollout = rollout or Rollout()
    rollout.check()
    missing = [var for var, value in (("ENDPOINT_NAME", settings.endpoint_name),
                                      ("SERVING_IMAGE_URI", settings.serving_image_uri),
                                      ("SAGEMAKER_ROLE_ARN", settings.sagemaker_role_arn),
                                      ("REGISTRY_URI", settings.registry_uri)) if not value]
    if missing:
        raise ConfigError("cannot deploy: " + ", ".join(missing) + " not set")
    pointer = registry.champion()
    if pointer is None:
        raise NotFoundError(f"no champion in {registry.uri}: nothing to deploy")
    version = str(pointer["version"])
    registry.manifest(version)  # a pointer to a version that does not exist is refused here

    endpoint = settings.endpoint_name
    model_spec = model_request("", version, settings)
    model_name = resource_name(endpoint, version, model_spec)
    config_variant = variant(model_name, settings, rollout)
    config_name = resource_name(endpoint, version, config_variant)
    guardrails = deployment_config(settings, rollout)
    result = DeployResult(endpoint, version, model_name, config_name, "unchanged",
                          settings.endpoint_mode, guardrails is not None)

    current = _describe_endpoint(client, endpoint)
    if current is not None and current.get("EndpointConfigName") == config_name:
        logger.info("endpoint %s already runs %s (%s); nothing to do", endpoint, config_name,
                    current.get("EndpointStatus"))
        return result
    if current is not None and current.get("EndpointStatus") in _BUSY:
        # SageMaker refuses a second update; raising lets the async invoke retry later.
        raise DeploymentError(f"endpoint {endpoint} is {current['EndpointStatus']} "
                              f"(config {current.get('EndpointConfigName')}); try again when it is InService")
    if current is not None and current.get("EndpointStatus") == "Failed":
        why = current.get("FailureReason", "no reason given")
        raise DeploymentError(f"endpoint {endpoint} is Failed ({why}): "
                              "delete it, then redeliver the champion event")

    _create_once(client.create_model, model_request(model_name, version, settings), f"model {model_name}")
    _create_once(client.create_endpoint_config,
                 {"EndpointConfigName": config_name, "ProductionVariants": [config_variant],
                  "Tags": [{"Key": "gemcast:version", "Value": version}]},
                 f"endpoint config {config_name}")
    from botocore.exceptions import ClientError

    try:
        if current is None:
            # No version tag on the endpoint: it outlives versions, and the tag would go stale.
            client.create_endpoint(EndpointName=endpoint, EndpointConfigName=config_name)
            result.action = "created"
        else:
            update: dict[str, Any] = {"EndpointName": endpoint, "EndpointConfigName": config_name}
            if guardrails is not None:
                update["DeploymentConfig"] = guardrails
            client.update_endpoint(**update)
            result.action = "updated"
    except ClientError as exc:
        code, message = _code(exc)
        raise DeploymentError(f"rolling endpoint {endpoint} to {config_name}: {code}: {message}") from exc
    logger.info("endpoint %s %s: version %s, config %s (%s%s)", endpoint, result.action, version,
                config_name, settings.endpoint_mode, ", blue/green with alarm rollback" if guardrails else "")
    return result
