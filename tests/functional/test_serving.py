"""The serving contract for both clouds, against a real ``gemcast serve`` (gunicorn) process.

SageMaker: ``GET /ping``, ``POST /invocations``, and the runtime wire path that a real boto3
``sagemaker-runtime`` client calls. Vertex AI: ``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``,
``AIP_PREDICT_ROUTE`` and ``AIP_STORAGE_URI`` through the image's serve entrypoint. A model
whose sha256 does not match its manifest stops the start.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from gemcast.pipeline import run_training
from gemcast.schema import EXAMPLE_STONE
from gemcast_local.servers import StandInServer, free_port
from gemcast_local.stack import ModelServer

REPO = Path(__file__).resolve().parents[2]
STONE = EXAMPLE_STONE
BIG = {
    "carat": 1.51,
    "cut": "Premium",
    "color": "G",
    "clarity": "VS2",
    "depth": 61.9,
    "table": 58.0,
    "x": 7.32,
    "y": 7.28,
    "z": 4.52,
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A registry with a champion trained on the bundled data (linear: seconds, not minutes)."""
    root = tmp_path_factory.mktemp("registry") / "models"
    outcome = run_training(str(REPO / "data" / "diamonds.csv"), root.as_uri(), kind="linear", progress=None)
    assert outcome.promoted
    return root, outcome.version


@pytest.fixture(scope="module")
def server(registry: tuple[Path, str]) -> Iterator[ModelServer]:
    with ModelServer(registry[0].as_uri(), workers=2) as running:
        yield running


def invoke(url: str, body: Any) -> requests.Response:
    return requests.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=30)


def test_ping_is_healthy_with_the_champion_loaded(server: ModelServer, registry: tuple[Path, str]) -> None:
    answer = requests.get(f"{server.url}/ping", timeout=5)
    assert answer.status_code == 200
    assert answer.json()["model_version"] == registry[1]


def test_invocations_prices_a_stone_with_its_reasons(server: ModelServer, registry: tuple[Path, str]) -> None:
    answer = invoke(f"{server.url}/invocations", {"instances": [STONE]})
    assert answer.status_code == 200
    body = answer.json()
    (prediction,) = body["predictions"]
    assert 1000 < prediction["price"] < 10000
    assert {r["feature"] for r in prediction["reasons"]} == set(STONE)
    assert body["model_version"] == registry[1]


def test_a_batch_of_1000_answers_in_order_with_per_stone_errors(server: ModelServer) -> None:
    stones: list[Any] = [STONE if i % 2 == 0 else BIG for i in range(1000)]
    stones[7] = {**BIG, "clarity": "VS9"}
    stones[500] = "not a stone"
    answer = invoke(f"{server.url}/invocations", {"instances": stones})
    assert answer.status_code == 200
    predictions = answer.json()["predictions"]
    assert len(predictions) == 1000
    single = invoke(f"{server.url}/invocations", {"instances": [STONE, BIG]}).json()["predictions"]
    assert predictions[0]["price"] == single[0]["price"] and predictions[1]["price"] == single[1]["price"]
    assert predictions[998]["price"] == single[0]["price"] and predictions[999]["price"] == single[1]["price"]
    assert set(predictions[7]["error"]["fields"]) == {"clarity"}
    assert "error" in predictions[500]
    assert sum("error" in p for p in predictions) == 2


def test_more_than_1000_stones_is_a_400(server: ModelServer) -> None:
    answer = invoke(f"{server.url}/invocations", {"instances": [STONE] * 1001})
    assert answer.status_code == 400
    assert "1000" in answer.json()["error"]["message"]


def test_the_sagemaker_runtime_client_reaches_it_by_the_wire_path(
    server: ModelServer, registry: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proxy's configuration: only the standard service-specific endpoint variable.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", server.url)
    client = boto3.client(
        "sagemaker-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    answer = client.invoke_endpoint(
        EndpointName="gemcast-dev",
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps({"instances": [STONE]}).encode(),
    )
    body = json.loads(answer["Body"].read())
    assert body["predictions"][0]["price"] > 0 and body["model_version"] == registry[1]


class ContainerServe(StandInServer):
    """The image's serve entrypoint, configured by the Vertex AI environment only."""

    name = "serve-vertex"
    probe_path = "/vertex/health"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gemcast.container", "serve", "--host", self.host, "--workers", "1"]

    def launch(self) -> None:
        self._extra_env["AIP_HTTP_PORT"] = str(self.port or free_port())
        self._fixed_port = self.port = int(self._extra_env["AIP_HTTP_PORT"])
        super().launch()

    def env(self) -> dict[str, str]:
        return {}


def test_the_vertex_contract_through_the_aip_variables(registry: tuple[Path, str]) -> None:
    root, version = registry
    env = {
        "AIP_HEALTH_ROUTE": "/vertex/health",
        "AIP_PREDICT_ROUTE": "/vertex/predict",
        "AIP_STORAGE_URI": f"{root.as_uri()}/{version}",
    }
    with ContainerServe(extra_env=env) as vertex:
        health = requests.get(f"{vertex.url}/vertex/health", timeout=5)
        assert health.status_code == 200 and health.json()["model_version"] == version
        answer = invoke(f"{vertex.url}/vertex/predict", {"instances": [STONE, {**STONE, "cut": "Superb"}]})
        assert answer.status_code == 200
        first, second = answer.json()["predictions"]
        assert first["price"] > 0 and set(second["error"]["fields"]) == {"cut"}


def test_a_tampered_model_stops_the_start(registry: tuple[Path, str], tmp_path: Path) -> None:
    root, version = registry
    copy = tmp_path / "models"
    shutil.copytree(root, copy)
    model = copy / version / "model.npz"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gemcast.cli",
            "serve",
            "--registry",
            copy.as_uri(),
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "sha256" in done.stderr and "refusing" in done.stderr
