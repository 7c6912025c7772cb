"""The serving contract for both clouds, against a real ``gemcast serve`` (gunicorn) process.

SageMaker: ``GET /ping``, ``POST /invocations``, and the runtime wire path that a real boto3
``sagemaker-runtime`` client calls. Vertex AI: ``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``,
``AIP_PREDICT_ROUTE`` and ``AIP_STORAGE_URI`` through the image's serve entrypoint. A model
whose sha256 does not match its manifest stops the start.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from gemcast.pipeline import run_training
from gemcast.schema import EXAMPLE_STONE, FEATURES
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


def test_as_many_stones_as_fit_in_6_mib_and_a_larger_body_is_a_413(server: ModelServer) -> None:
    answer = invoke(f"{server.url}/invocations", {"instances": [STONE] * 5000})
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 5000
    huge = b'{"instances": [' + b'{"carat": 0.7},' * (7 * 1024 * 1024 // 15) + b"{}]}"
    answer = requests.post(f"{server.url}/invocations", data=huge, headers={"Content-Type": "application/json"},
                           timeout=30)
    assert answer.status_code == 413 and "bytes" in answer.json()["error"]["message"]


def test_a_chunked_body_is_read_whole(server: ModelServer) -> None:
    chunks = (part.encode() for part in ('{"instances": [', json.dumps(STONE), ",", json.dumps(BIG), "]}"))
    answer = requests.post(f"{server.url}/invocations", data=chunks, headers={"Content-Type": "application/json"},
                           timeout=30)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2


def csv_line(stone: dict[str, Any]) -> str:
    return ",".join(str(stone[f]) for f in FEATURES)


def test_csv_in_one_stone_a_line_is_answered_in_csv_in_order_with_a_bad_line_in_its_place(
    server: ModelServer,
) -> None:
    body = "\n".join([csv_line(STONE), csv_line({**BIG, "cut": "Superb"}), '0.7,"Ideal,E', csv_line(BIG)]) + "\n"
    answer = requests.post(f"{server.url}/invocations", data=body, headers={"Content-Type": "text/csv"}, timeout=30)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert len(rows) == 4
    prices = invoke(f"{server.url}/invocations", [STONE, BIG]).json()["predictions"]
    assert float(rows[0][0]) == prices[0]["price"] and float(rows[3][0]) == prices[1]["price"]
    assert rows[1][0] == "" and "Superb" in rows[1][1]
    assert rows[2][0] == "" and "quote" in rows[2][1]


def test_csv_with_a_header_in_another_order_and_quoted_fields_answers_json_on_request(server: ModelServer) -> None:
    names = list(reversed(FEATURES))
    body = ",".join(names) + "\n" + ",".join(f'"{STONE[f]}"' for f in names) + "\n"
    answer = requests.post(f"{server.url}/invocations", data=body, timeout=30,
                           headers={"Content-Type": "text/csv", "Accept": "application/json"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    (prediction,) = answer.json()["predictions"]
    assert prediction["price"] == invoke(f"{server.url}/invocations", STONE).json()["predictions"][0]["price"]


def test_jsonlines_in_and_out_with_a_bad_line_answered_in_its_place(server: ModelServer) -> None:
    values = [STONE[f] for f in FEATURES]
    body = json.dumps(STONE) + "\n{not json\n" + json.dumps(values) + "\n"
    answer = requests.post(f"{server.url}/invocations", data=body, headers={"Content-Type": "application/jsonlines"},
                           timeout=30)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/jsonlines"
    first, bad, listed = (json.loads(line) for line in answer.text.splitlines())
    assert first["price"] == listed["price"] > 0 and "reasons" in first
    assert "not JSON" in bad["error"]["message"]


def test_an_accept_not_served_is_a_406_and_an_unknown_content_type_a_415(server: ModelServer) -> None:
    answer = requests.post(f"{server.url}/invocations", data=json.dumps(STONE), timeout=30,
                           headers={"Content-Type": "application/json", "Accept": "application/x-protobuf"})
    assert answer.status_code == 406
    assert all(t in answer.json()["error"]["message"] for t in ("application/json", "text/csv", "jsonlines"))
    answer = requests.post(f"{server.url}/invocations", data=b"\x00", headers={"Content-Type": "image/png"},
                           timeout=30)
    assert answer.status_code == 415 and "text/csv" in answer.json()["error"]["message"]
    answer = requests.post(f"{server.url}/invocations", data=json.dumps(STONE), timeout=30,
                           headers={"Content-Type": "application/json", "Accept": "text/csv;q=0.5, */*;q=0.1"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "text/csv"


def test_execution_parameters_tell_batch_transform_how_to_send(server: ModelServer) -> None:
    answer = requests.get(f"{server.url}/execution-parameters", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}


VERTEX = "/v1/projects/p/locations/us-central1/endpoints/e:predict"


@pytest.mark.parametrize("body", [{}, {"parameters": {"reasons": False}}, {"instances": []}])
def test_vertex_with_no_instances_is_an_invalid_argument(server: ModelServer, body: dict[str, Any]) -> None:
    answer = invoke(f"{server.url}{VERTEX}", body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT" and "no stones" in error["message"]


def test_vertex_parameters_are_read_as_written_and_instances_may_be_lists_of_values(server: ModelServer) -> None:
    values = [STONE[f] for f in FEATURES]
    answer = invoke(f"{server.url}{VERTEX}", {"instances": [values, values[:3]], "parameters": {"reasons": "false"}})
    assert answer.status_code == 200
    listed, short = answer.json()["predictions"]
    # no reasons: the price and its range only
    assert listed.keys() == {"price", "price_range"}
    assert listed["price"] == invoke(f"{server.url}/invocations", STONE).json()["predictions"][0]["price"]
    assert "9 values" in short["error"]["message"]
    answer = invoke(f"{server.url}{VERTEX}", {"instances": [STONE], "parameters": {"reasons": "maybe"}})
    assert answer.status_code == 400 and answer.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "parameters.reasons" in answer.json()["error"]["message"]


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
    answer = client.invoke_endpoint(EndpointName="gemcast-dev", ContentType="text/csv", Accept="text/csv",
                                    CustomAttributes="reasons=false", Body=csv_line(STONE).encode())
    assert float(answer["Body"].read().decode().split(",")[0]) == body["predictions"][0]["price"]


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


def test_a_graceful_stop_ends_every_worker_cleanly(tmp_path: Path) -> None:
    """SIGTERM with the onnxruntime trees loaded: no worker aborts (it used to, on every stop)."""
    root = tmp_path / "models"
    run_training(str(REPO / "data" / "diamonds.csv"), root.as_uri(), kind="gbm", budget_s=1, max_trials=1,
                 max_iter=20, progress=None)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gemcast.container", "serve", "--host", "127.0.0.1",
                                 "--workers", "2"], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "REGISTRY_URI": root.as_uri(),
                                     "GEMCAST_SAGEMAKER_ROOT": str(tmp_path / "opt_ml")})
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                        break
                time.sleep(0.2)
            session = requests.Session()
            for _ in range(8):  # reach both workers
                assert invoke_with(session, f"http://127.0.0.1:{port}/invocations", [STONE, BIG]).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    text = log.read_text()
    assert code == 0, text
    assert "SIGABRT" not in text and "terminate called" not in text, text


def invoke_with(session: requests.Session, url: str, body: Any) -> requests.Response:
    return session.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=30)


def test_the_aiplatform_client_reads_a_refusal_as_vertex_gives_it(server: ModelServer) -> None:
    from google.api_core import exceptions as gexc
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.aiplatform_v1.services.prediction_service import PredictionServiceClient
    from google.protobuf import json_format, struct_pb2

    from gemcast.gcp import endpoint_path

    # The client users have (google-cloud-aiplatform, REST transport), aimed at the serving process.
    client = PredictionServiceClient(transport="rest", client_options=ClientOptions(api_endpoint=server.url),
                                     credentials=AnonymousCredentials())
    path = endpoint_path("p", "us-central1", "e")
    answer = client.predict(endpoint=path, instances=[json_format.ParseDict(STONE, struct_pb2.Value())])
    assert answer.predictions[0]["price"] > 0
    with pytest.raises(gexc.BadRequest) as refused:
        client.predict(endpoint=path, instances=[])  # the client sends {} for an empty list
    assert "no stones" in refused.value.message
