"""The Vertex AI canary (gemcast.vertex_deploy) with the real aiplatform and monitoring clients,
against the local stand-ins of Vertex AI's REST API and Cloud Monitoring's gRPC API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gemcast.deploy import Rollout
from gemcast.gcp_monitoring import VERTEX_PREFIX, VertexMetrics, metric_client
from gemcast.registry import ModelPackage, Registry
from gemcast.storage import FileStorage
from gemcast.vertex_deploy import VertexTarget, clients, display_name, roll_champion
from gemcast_local.gcp_standins import MonitoringStandIn, VertexStandIn

PROJECT, REGION, ENDPOINT_ID = "gemcast-test", "europe-west1", "410000001"
ROLLOUT = Rollout(traffic="CANARY", canary_percent=10, wait_s=300)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with VertexStandIn(PROJECT, REGION) as vertex, MonitoringStandIn() as monitoring:
        endpoint = vertex.add_endpoint(ENDPOINT_ID)
        bucket = FileStorage(tmp_path / "bucket")
        registry = Registry(f"{bucket.uri}/models", storage=bucket.child("models"))
        for version in ("v1", "v2"):
            registry.publish(ModelPackage({"model.npz": version.encode()}, {"version": version}))
        endpoints, models = clients(vertex.url)
        target = VertexTarget(PROJECT, REGION, ENDPOINT_ID, "europe-docker.pkg.dev/p/gemcast/serving:1",
                              registry.uri)
        health = VertexMetrics(metric_client(monitoring.url), PROJECT)

        def step(minutes: float = 0) -> dict[str, Any]:
            now = datetime.now(UTC) + timedelta(minutes=minutes)
            return roll_champion(endpoints, models, health, registry, target, ROLLOUT, now=now).as_dict()

        yield {"vertex": vertex, "monitoring": monitoring, "endpoint": endpoint, "registry": registry,
               "step": step}


def serving(cloud: dict[str, Any]) -> dict[str, int]:
    """Traffic share by the deployed model's display name."""
    endpoint = cloud["vertex"].endpoints[cloud["endpoint"]]
    names = {d["id"]: d["displayName"] for d in endpoint["deployedModels"]}
    return {names[i]: share for i, share in endpoint["trafficSplit"].items()}


def deployed_id(cloud: dict[str, Any], version: str) -> str:
    (found,) = [d["id"] for d in cloud["vertex"].deployed(cloud["endpoint"])
                if d["displayName"] == display_name(version)]
    return str(found)


def vertex_metric(cloud: dict[str, Any], version: str, metric: str, value: float) -> None:
    cloud["monitoring"].add(VERTEX_PREFIX + metric, {"deployed_model_id": deployed_id(cloud, version)},
                            {"endpoint_id": ENDPOINT_ID}, value)


def test_the_first_champion_takes_all_traffic_of_an_empty_endpoint(cloud: dict[str, Any]) -> None:
    cloud["registry"].promote("v1", reason="first")

    first, again = cloud["step"](), cloud["step"]()

    assert first["action"] == "canary_started" and first["traffic_split"] == {"0": 100}
    assert serving(cloud) == {"gemcast-v1": 100} and again["action"] == "unchanged"
    (model,) = cloud["vertex"].models.values()
    env = {e["name"]: e["value"] for e in model["containerSpec"]["env"]}
    assert env["MODEL_VERSION"] == "v1" and model["containerSpec"]["predictRoute"] == "/invocations"


def test_a_healthy_canary_gets_ten_percent_then_all_traffic(cloud: dict[str, Any]) -> None:
    cloud["registry"].promote("v1", reason="first")
    cloud["step"]()
    cloud["registry"].promote("v2", reason="better")

    started = cloud["step"]()
    assert started["action"] == "canary_started" and serving(cloud) == {"gemcast-v1": 90, "gemcast-v2": 10}
    assert cloud["step"]()["action"] == "watching"  # the stand-in finishes deploying at once
    vertex_metric(cloud, "v2", "prediction_count", 120)
    vertex_metric(cloud, "v2", "prediction_latencies", 41.0)
    watching = cloud["step"](minutes=2)
    assert watching["action"] == "watching" and "120 predictions, 0 errors" in watching["reason"]

    promoted = cloud["step"](minutes=6)

    assert promoted["action"] == "promoted" and serving(cloud) == {"gemcast-v2": 100}
    assert [d["displayName"] for d in cloud["vertex"].deployed(cloud["endpoint"])] == ["gemcast-v2"]
    assert cloud["step"](minutes=7)["action"] == "unchanged"


@pytest.mark.parametrize(("metric", "value", "why"), [("error_count", 3, "3 errors"),
                                                      ("prediction_latencies", 900.0, "p99 latency 900 ms")])
def test_a_failing_canary_is_undeployed_and_not_tried_again(cloud: dict[str, Any], metric: str, value: float,
                                                            why: str) -> None:
    cloud["registry"].promote("v1", reason="first")
    cloud["step"]()
    cloud["registry"].promote("v2", reason="better on the held-out rows")
    cloud["step"]()
    vertex_metric(cloud, "v2", metric, value)

    rolled = cloud["step"](minutes=2)

    assert rolled["action"] == "rolled_back" and why in rolled["reason"]
    assert serving(cloud) == {"gemcast-v1": 100}
    assert cloud["step"](minutes=3)["action"] == "refused"
    assert serving(cloud) == {"gemcast-v1": 100}


def test_the_schedule_watches_only_a_new_champion_waits_for_its_event(cloud: dict[str, Any]) -> None:
    registry, step = cloud["registry"], cloud["step"]
    target = VertexTarget(PROJECT, REGION, ENDPOINT_ID, "europe-docker.pkg.dev/p/gemcast/serving:1", registry.uri)
    endpoints, models = clients(cloud["vertex"].url)
    health = VertexMetrics(metric_client(cloud["monitoring"].url), PROJECT)

    def watch() -> dict[str, Any]:
        return roll_champion(endpoints, models, health, registry, target, ROLLOUT, start=False).as_dict()

    assert watch()["action"] == "idle"  # no champion yet: nothing to watch, no error
    registry.promote("v1", reason="first")
    idle = watch()
    assert idle["action"] == "idle" and "its champion event starts the canary" in idle["reason"]
    assert serving(cloud) == {} and cloud["vertex"].models == {}
    step()  # the champion event
    registry.promote("v2", reason="better")
    assert watch()["action"] == "idle" and serving(cloud) == {"gemcast-v1": 100}
    step()
    assert watch()["action"] == "watching" and serving(cloud) == {"gemcast-v1": 90, "gemcast-v2": 10}
