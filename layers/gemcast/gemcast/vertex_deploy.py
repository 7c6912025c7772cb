"""Rolling the Vertex AI endpoint to the champion with a canary: the guard SageMaker's
blue/green deployment gives the AWS endpoint (gemcast.deploy), on GCP.

The canary starts on the champion event, as DeployModelFunction starts SageMaker's on AWS: the
registry's ``champion.json`` written in the bucket is a Cloud Storage notification (OBJECT_FINALIZE,
object prefix ``<registry prefix>/champion.json``) on the canary's Pub/Sub topic, and the function
``roll_champion`` takes the first step at once. Vertex AI deploys a model in minutes and has no
alarm-driven rollback of its own, so Cloud Scheduler publishes on the same topic every few
minutes to watch the canary: those steps never start a deployment (``start=False``);
``canary_cause`` tells the two messages apart. Each call takes one step and returns; what step
to take is read from the platform itself, nothing is kept elsewhere:

1. the champion is not on the endpoint: upload its Vertex AI Model (id from the version; the
   container serves exactly that version, ``MODEL_VERSION``) and start deploying it beside the
   old model with ``canary_percent`` of the traffic; an empty endpoint (the first champion: no
   old model to split with, nothing to fall back to) gives it all of it. Only the champion
   event (or ``python -m gemcast.vertex_deploy``, gcp/deploy.sh's model step) does this; the
   schedule answers ``idle``;
2. the champion serves part of the traffic: read its prediction, error and p99 latency metrics
   since it was deployed; more errors than ``max_errors`` or a p99 above
   ``max_p99_latency_ms`` (the thresholds of the template's EndpointErrorsAlarm and
   EndpointLatencyAlarm, which roll SageMaker back) undeploys it and gives the old model all
   traffic again; after ``wait_s`` without a breach, all traffic moves to it;
3. the champion serves all traffic: the old models are undeployed; then nothing changes.

A champion that failed its canary is labelled so on its Model and not deployed again; promote
another (or roll the registry back) to move on. A Model labelled as deploying is left alone
for ``deploy_timeout_s`` so two steps never start two deployments.

    python -m gemcast.vertex_deploy --project P --region R --endpoint-id E --image URI --registry gs://B/models
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from gemcast.deploy import DeploymentError, Rollout
from gemcast.errors import ConfigError, GemcastError, NotFoundError
from gemcast.registry import Registry

logger = logging.getLogger(__name__)

LABEL_VERSION = "gemcast-version"
LABEL_STATE = "gemcast-canary"
LABEL_STARTED = "gemcast-deploy-started"
DEPLOYING, ROLLED_BACK = "deploying", "rolled-back"


@dataclass(frozen=True)
class VertexTarget:
    """Where and what to deploy (from Settings: project, region, endpoint id, image)."""

    project: str
    region: str
    endpoint_id: str
    image_uri: str
    registry_uri: str
    stage: str = "dev"
    machine_type: str = "n1-standard-2"
    min_replicas: int = 1
    max_replicas: int = 2
    service_account: str = ""
    deploy_timeout_s: int = 7200

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def endpoint(self) -> str:
        return f"{self.parent}/endpoints/{self.endpoint_id}"


@dataclass
class CanaryStep:
    version: str
    action: str  # deploying, canary_started, watching, promoted, rolled_back, refused, unchanged, idle
    reason: str
    deployed_model_id: str = ""
    traffic_split: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def clients(api_endpoint: str) -> tuple[Any, Any]:
    """EndpointServiceClient and ModelServiceClient on the REST transport (as gemcast.gcp)."""
    from google.api_core.client_options import ClientOptions
    from google.cloud.aiplatform_v1.services.endpoint_service import EndpointServiceClient
    from google.cloud.aiplatform_v1.services.model_service import ModelServiceClient

    from gemcast.gcp import _credentials_for

    options = ClientOptions(api_endpoint=api_endpoint)
    credentials = _credentials_for(api_endpoint)
    return (EndpointServiceClient(transport="rest", client_options=options, credentials=credentials),
            ModelServiceClient(transport="rest", client_options=options, credentials=credentials))


CHAMPION_EVENT, SCHEDULE = "champion", "schedule"


def canary_cause(data: Any, registry_uri: str) -> str | None:
    """What a Pub/Sub message on the canary topic (as Eventarc delivers it: ``data.message``) is:
    ``"champion"``, the bucket's notification (OBJECT_FINALIZE) of the registry's champion.json
    (its object prefix also matches other names, so the exact name is checked);
    ``"schedule"``, Cloud Scheduler's ``{"source": "schedule"}``; None for anything else."""
    from gemcast.registry import CHAMPION
    from gemcast.storage import split_uri

    message = data.get("message") if isinstance(data, Mapping) else None
    if not isinstance(message, Mapping):
        return None
    attributes = message.get("attributes") or {}
    if isinstance(attributes, Mapping) and "eventType" in attributes:
        scheme, bucket, prefix = split_uri(registry_uri)
        key = f"{prefix.strip('/')}/{CHAMPION}".lstrip("/")
        written = (scheme == "gs" and attributes.get("eventType") == "OBJECT_FINALIZE"
                   and attributes.get("bucketId") == bucket and attributes.get("objectId") == key)
        return CHAMPION_EVENT if written else None
    try:
        body = json.loads(base64.b64decode(str(message.get("data") or "")) or b"{}")
    except ValueError:
        return None
    return SCHEDULE if isinstance(body, Mapping) and body.get("source") == SCHEDULE else None


def model_id(target: VertexTarget, version: str) -> str:
    """A Model id from the version: [a-z0-9-], at most 63, starting with a letter."""
    return re.sub(r"[^a-z0-9-]+", "-", f"gemcast-{target.stage}-{version}".lower()).strip("-")[:63]


def display_name(version: str) -> str:
    return f"gemcast-{version}"


def _model_spec(target: VertexTarget, version: str, now: datetime) -> dict[str, Any]:
    env = {"REGISTRY_URI": target.registry_uri, "MODEL_VERSION": version, "OMP_NUM_THREADS": "1"}
    return {
        "display_name": display_name(version),
        "container_spec": {"image_uri": target.image_uri, "health_route": "/ping", "predict_route": "/invocations",
                           "ports": [{"container_port": 8080}],
                           "env": [{"name": k, "value": v} for k, v in env.items()]},
        "labels": {LABEL_VERSION: _label(version), LABEL_STATE: DEPLOYING, LABEL_STARTED: str(int(now.timestamp()))},
    }


def _label(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def _get_model(models: Any, name: str) -> Any | None:
    from google.api_core import exceptions as gexc

    try:
        return models.get_model(name=name, timeout=30)
    except gexc.NotFound:
        return None


def _set_state(models: Any, model: Any, state: str, now: datetime | None = None) -> None:
    from google.protobuf import field_mask_pb2

    labels = dict(model.labels)
    labels[LABEL_STATE] = state
    if now is not None:  # a deployment starts now: the deploy timeout counts from here
        labels[LABEL_STARTED] = str(int(now.timestamp()))
    model.labels = labels
    models.update_model(model=model, update_mask=field_mask_pb2.FieldMask(paths=["labels"]), timeout=30)


def roll_champion(endpoints: Any, models: Any, health: Any, registry: Registry, target: VertexTarget,
                  rollout: Rollout | None = None, now: datetime | None = None, *, start: bool = True) -> CanaryStep:
    """One step towards the champion serving all traffic; see the module docstring.

    ``start=False`` (the schedule) watches only: a champion not on the endpoint, with no
    deployment of it under way, is left for its champion event to start (``idle``)."""
    from google.api_core import exceptions as gexc

    rollout = rollout or Rollout()
    rollout.check()
    now = now or datetime.now(UTC)
    if not (target.project and target.endpoint_id and target.image_uri and target.registry_uri):
        raise ConfigError("cannot deploy: GOOGLE_CLOUD_PROJECT, VERTEX_ENDPOINT_ID, SERVING_IMAGE_URI and "
                          "REGISTRY_URI must be set")
    pointer = registry.champion()
    if pointer is None and not start:
        return CanaryStep("", "idle", f"no champion in {registry.uri} yet: nothing to watch")
    if pointer is None:
        raise NotFoundError(f"no champion in {registry.uri}: nothing to deploy")
    version = str(pointer["version"])
    registry.manifest(version)  # a pointer to a version that does not exist is refused here
    try:
        endpoint = endpoints.get_endpoint(name=target.endpoint, timeout=30)
    except gexc.GoogleAPICallError as exc:
        raise DeploymentError(f"reading endpoint {target.endpoint}: {exc}") from exc
    split = {k: int(v) for k, v in dict(endpoint.traffic_split).items()}
    mine = [d for d in endpoint.deployed_models if d.display_name == display_name(version)]
    others = [d for d in endpoint.deployed_models if d.display_name != display_name(version)]

    if mine:
        new = mine[0]
        if split.get(new.id, 0) >= 100:
            for old in others:
                endpoints.undeploy_model(endpoint=target.endpoint, deployed_model_id=old.id,
                                         traffic_split={new.id: 100}, timeout=60)
            action = "promoted" if others else "unchanged"
            return CanaryStep(version, action, f"{version} serves all traffic"
                              + (f"; undeployed {', '.join(o.id for o in others)}" if others else ""),
                              new.id, {new.id: 100})
        return _watch(endpoints, models, health, target, rollout, version, new, others, split, now)

    model_name = f"{target.parent}/models/{model_id(target, version)}"
    model = _get_model(models, model_name)
    if model is not None:
        state = model.labels.get(LABEL_STATE, "")
        if state == ROLLED_BACK:
            return CanaryStep(version, "refused", f"{version} failed its canary on this endpoint; promote "
                              "another version or roll the registry back", traffic_split=split)
        started = int(model.labels.get(LABEL_STARTED, "0") or 0)
        if state == DEPLOYING and now.timestamp() - started < target.deploy_timeout_s:
            return CanaryStep(version, "deploying", f"{version} is being deployed (since {started})",
                              traffic_split=split)
    if not start:
        stalled = model is not None and model.labels.get(LABEL_STATE) == DEPLOYING
        if stalled:
            logger.warning("%s was labelled deploying more than %s s ago and is not on %s", version,
                           target.deploy_timeout_s, target.endpoint)
        return CanaryStep(version, "idle", f"no canary under way: {version} is not on the endpoint"
                          + (f" (its deployment started more than {target.deploy_timeout_s} s ago did not finish)"
                             if stalled else "")
                          + "; its champion event starts the canary", traffic_split=split)
    if model is None:
        upload = models.upload_model(request={"parent": target.parent, "model": _model_spec(target, version, now),
                                              "model_id": model_id(target, version)}, timeout=60)
        upload.result(timeout=600)
        model = _get_model(models, model_name)
    if model is not None and model.labels.get(LABEL_STARTED) != str(int(now.timestamp())):
        _set_state(models, model, DEPLOYING, now)
    old_ids = [d.id for d in others if split.get(d.id, 0) > 0]
    traffic = {"0": 100} if not old_ids else {"0": rollout.canary_percent, **_rest(split, old_ids,
                                                                                100 - rollout.canary_percent)}
    deployed: dict[str, Any] = {
        "model": model_name, "display_name": display_name(version),
        "dedicated_resources": {"machine_spec": {"machine_type": target.machine_type},
                                "min_replica_count": target.min_replicas, "max_replica_count": target.max_replicas},
    }
    if target.service_account:
        deployed["service_account"] = target.service_account
    endpoints.deploy_model(endpoint=target.endpoint, deployed_model=deployed, traffic_split=traffic, timeout=60)
    logger.info("deploying %s to %s with traffic %s", version, target.endpoint, traffic)
    return CanaryStep(version, "canary_started", f"deploying {version} beside {old_ids or 'nothing'} with "
                      f"{traffic['0']} % of the traffic", traffic_split=traffic)


def _rest(split: dict[str, int], ids: list[str], total: int) -> dict[str, int]:
    """``total`` percent over the old models, in their current proportions (largest gets the rest)."""
    weights = {i: split.get(i, 0) for i in ids}
    whole = sum(weights.values()) or 1
    shares = {i: (w * total) // whole for i, w in weights.items()}
    biggest = max(shares, key=lambda i: weights[i])
    shares[biggest] += total - sum(shares.values())
    return shares


def _watch(endpoints: Any, models: Any, health: Any, target: VertexTarget, rollout: Rollout, version: str,
           new: Any, others: list[Any], split: dict[str, int], now: datetime) -> CanaryStep:
    started = new.create_time
    started = started if started.tzinfo else started.replace(tzinfo=UTC)
    figures = health.health(target.endpoint_id, new.id, started, now)
    breach = []
    if figures.errors > rollout.max_errors:
        breach.append(f"{figures.errors:g} errors (at most {rollout.max_errors})")
    if figures.p99_latency_ms is not None and figures.p99_latency_ms > rollout.max_p99_latency_ms:
        breach.append(f"p99 latency {figures.p99_latency_ms:g} ms (at most {rollout.max_p99_latency_ms:g})")
    old_ids = [d.id for d in others]
    if breach:
        back = _rest(split, old_ids, 100) if old_ids else {}
        endpoints.undeploy_model(endpoint=target.endpoint, deployed_model_id=new.id, traffic_split=back, timeout=60)
        model = _get_model(models, str(new.model))
        if model is not None:
            _set_state(models, model, ROLLED_BACK)
        reason = f"rolled back {version}: " + "; ".join(breach)
        logger.error("%s on %s", reason, target.endpoint)
        return CanaryStep(version, "rolled_back", reason, new.id, back)
    waited = (now - started).total_seconds()
    if waited < rollout.wait_s:
        return CanaryStep(version, "watching", f"{version} on {split.get(new.id, 0)} % for {waited:.0f} of "
                          f"{rollout.wait_s} s: {figures.predictions:g} predictions, {figures.errors:g} errors",
                          new.id, split)
    endpoints.update_endpoint(endpoint={"name": target.endpoint, "traffic_split": {new.id: 100}},
                              update_mask={"paths": ["traffic_split"]}, timeout=60)
    for old in others:
        endpoints.undeploy_model(endpoint=target.endpoint, deployed_model_id=old.id, traffic_split={new.id: 100},
                                 timeout=60)
    model = _get_model(models, str(new.model))
    if model is not None:
        _set_state(models, model, "promoted")
    return CanaryStep(version, "promoted", f"{version} passed {rollout.wait_s} s of canary "
                      f"({figures.predictions:g} predictions, {figures.errors:g} errors): all traffic",
                      new.id, {new.id: 100})


def main(argv: Sequence[str] | None = None) -> int:
    """One step with ``start=True``, from a deployer's machine (gcp/deploy.sh's model step): the
    same path as the champion event; printed as JSON."""
    from gemcast.gcp_monitoring import VertexMetrics, metric_client

    parser = argparse.ArgumentParser(prog="python -m gemcast.vertex_deploy",
                                     description="one step of the Vertex AI canary to the registry's champion")
    parser.add_argument("--project", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--endpoint-id", required=True)
    parser.add_argument("--image", required=True, help="the serving image")
    parser.add_argument("--registry", required=True, help="REGISTRY_URI, e.g. gs://BUCKET/models")
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--service-account", default="", help="the serving service account's e-mail")
    parser.add_argument("--machine-type", default="n1-standard-2")
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=2)
    parser.add_argument("--api-endpoint", default="", help="default: <region>-aiplatform.googleapis.com")
    parser.add_argument("--monitoring-api-endpoint", default="")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    endpoints, models = clients(args.api_endpoint or f"{args.region}-aiplatform.googleapis.com")
    target = VertexTarget(args.project, args.region, args.endpoint_id, args.image, args.registry, stage=args.stage,
                          machine_type=args.machine_type, min_replicas=args.min_replicas,
                          max_replicas=args.max_replicas, service_account=args.service_account)
    health = VertexMetrics(metric_client(args.monitoring_api_endpoint), args.project)
    registry = Registry(args.registry)
    try:
        if registry.champion() is None:  # a new project: the first promotion's event deploys it
            print(json.dumps({"action": "none", "reason": f"no champion in {registry.uri} yet: the first "
                              "promotion's champion event deploys it"}, indent=2))
            return 0
        step = roll_champion(endpoints, models, health, registry, target)
    except GemcastError as exc:
        print(f"gemcast.vertex_deploy: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(step.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
