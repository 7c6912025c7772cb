"""roll_champion as deployed (functions-framework, a Pub/Sub CloudEvent function): the champion
event starts the Vertex AI canary, the schedule only watches it.

Its topic has two publishers, as gcp/deploy.sh's drift step wires them: the bucket's notification
of the registry's champion.json (what ``Registry.promote`` writes) and the Cloud Scheduler job's
``{"source": "schedule"}``. Against the Cloud Storage emulator (the registry), the Vertex AI
endpoint and model stand-in and the Cloud Monitoring stand-in (the canary's metrics).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gemcast.gcp_monitoring import VERTEX_PREFIX
from gemcast.registry import ModelPackage, Registry
from gemcast.storage import GCSStorage
from gemcast.vertex_deploy import display_name
from gemcast_local.gcp_stack import (
    BUCKET,
    ENDPOINT_ID,
    PROJECT,
    REGION,
    FunctionServer,
    function_env,
    post_cloud_event,
    pubsub_event,
    storage_notification,
)
from gemcast_local.gcp_standins import MonitoringStandIn, VertexStandIn
from gemcast_local.servers import GcsEmulator

TOPIC = "gemcast-local-canary"


@pytest.fixture(scope="module")
def standins(gcs_emulator: GcsEmulator) -> Iterator[dict[str, Any]]:
    with VertexStandIn(PROJECT, REGION) as vertex, MonitoringStandIn() as monitoring:
        env = function_env(emulators=gcs_emulator.env(), vertex_api_endpoint=vertex.url,
                           MONITORING_API_ENDPOINT=monitoring.url,
                           SERVING_IMAGE_URI="europe-docker.pkg.dev/gemcast-local/gemcast/serving:1")
        with FunctionServer("roll_champion", env=env) as function:
            yield {"vertex": vertex, "monitoring": monitoring, "function": function}


@pytest.fixture
def cloud(standins: dict[str, Any], gcs_env: dict[str, str]) -> dict[str, Any]:
    from google.cloud import storage  # type: ignore[attr-defined]

    vertex: VertexStandIn = standins["vertex"]
    vertex.endpoints.clear()
    vertex.models.clear()
    standins["monitoring"].series.clear()
    endpoint = vertex.add_endpoint(ENDPOINT_ID)
    gcs = storage.Client(project=PROJECT)
    gcs.create_bucket(BUCKET)
    registry = Registry(f"gs://{BUCKET}/models", storage=GCSStorage(BUCKET, "models", client=gcs))
    for version in ("v1", "v2"):
        registry.publish(ModelPackage({"model.npz": version.encode()}, {"version": version}))
    return {**standins, "endpoint": endpoint, "registry": registry}


def promote(cloud: dict[str, Any], version: str) -> None:
    """Registry.promote writes models/champion.json; the bucket's notification is its event."""
    cloud["registry"].promote(version, reason="test")
    champion_event(cloud, "models/champion.json")


def champion_event(cloud: dict[str, Any], name: str) -> None:
    assert post_cloud_event(cloud["function"].url, storage_notification(BUCKET, name, TOPIC)) == 200


def schedule(cloud: dict[str, Any]) -> None:
    """Cloud Scheduler's Pub/Sub job on the canary topic."""
    message = json.dumps({"source": "schedule"}).encode()
    assert post_cloud_event(cloud["function"].url, pubsub_event(TOPIC, message)) == 200


def serving(cloud: dict[str, Any]) -> dict[str, int]:
    """Traffic share by the deployed model's display name."""
    endpoint = cloud["vertex"].endpoints[cloud["endpoint"]]
    names = {d["id"]: d["displayName"] for d in endpoint["deployedModels"]}
    return {names[i]: share for i, share in endpoint["trafficSplit"].items()}


def test_the_first_champion_event_gives_an_empty_endpoint_all_traffic(cloud: dict[str, Any]) -> None:
    schedule(cloud)  # no champion yet: the schedule has nothing to watch
    assert serving(cloud) == {} and cloud["vertex"].models == {}

    promote(cloud, "v1")

    assert serving(cloud) == {"gemcast-v1": 100}
    (model,) = cloud["vertex"].models.values()
    assert {e["name"]: e["value"] for e in model["containerSpec"]["env"]}["MODEL_VERSION"] == "v1"
    champion_event(cloud, "models/champion.json")  # Pub/Sub delivers at least once: nothing changes
    schedule(cloud)
    assert serving(cloud) == {"gemcast-v1": 100} and len(cloud["vertex"].models) == 1


def test_a_new_champion_waits_for_its_event_then_the_schedule_watches_and_rolls_it_back(
    cloud: dict[str, Any],
) -> None:
    promote(cloud, "v1")
    cloud["registry"].promote("v2", reason="better on the held-out rows")  # its event not yet delivered

    schedule(cloud)
    assert serving(cloud) == {"gemcast-v1": 100}, "the schedule never starts a canary"

    champion_event(cloud, "models/champion.json")
    assert serving(cloud) == {"gemcast-v1": 90, "gemcast-v2": 10}
    schedule(cloud)
    assert serving(cloud) == {"gemcast-v1": 90, "gemcast-v2": 10}, "watching: 300 s of canary first"

    (new,) = [d["id"] for d in cloud["vertex"].deployed(cloud["endpoint"]) if d["displayName"] == display_name("v2")]
    cloud["monitoring"].add(VERTEX_PREFIX + "error_count", {"deployed_model_id": new}, {"endpoint_id": ENDPOINT_ID},
                            2)
    schedule(cloud)

    assert serving(cloud) == {"gemcast-v1": 100}
    assert [d["displayName"] for d in cloud["vertex"].deployed(cloud["endpoint"])] == ["gemcast-v1"]
    champion_event(cloud, "models/champion.json")  # a redelivered event does not try it again
    assert serving(cloud) == {"gemcast-v1": 100}


@pytest.mark.parametrize("name", ["models/champion.json.tmp", "models/v2/manifest.json", "logs/x.json"])
def test_a_notification_of_another_object_changes_nothing(cloud: dict[str, Any], name: str) -> None:
    cloud["registry"].promote("v1", reason="test")

    champion_event(cloud, name)

    assert serving(cloud) == {} and cloud["vertex"].models == {}


def test_the_deploy_scripts_model_step_is_the_same_first_step(cloud: dict[str, Any],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """gcp/deploy.sh's model step runs `python -m gemcast.vertex_deploy`: nothing without a
    champion, all traffic on an empty endpoint, a canary beside the old model later."""
    from gemcast import vertex_deploy

    args = ["--project", PROJECT, "--region", REGION, "--endpoint-id", ENDPOINT_ID,
            "--image", "europe-docker.pkg.dev/gemcast-local/gemcast/serving:1", "--registry", f"gs://{BUCKET}/models",
            "--stage", "local", "--api-endpoint", cloud["vertex"].url,
            "--monitoring-api-endpoint", cloud["monitoring"].url]

    def step() -> dict[str, Any]:
        assert vertex_deploy.main(args) == 0
        return dict(json.loads(capsys.readouterr().out))

    assert step()["action"] == "none" and serving(cloud) == {}
    cloud["registry"].promote("v1", reason="first")
    first = step()
    assert first["action"] == "canary_started" and serving(cloud) == {"gemcast-v1": 100}
    assert step()["action"] == "unchanged"
    cloud["registry"].promote("v2", reason="better")
    assert step()["action"] == "canary_started" and serving(cloud) == {"gemcast-v1": 90, "gemcast-v2": 10}
