"""The GCP adapters of gemcast.gcp in process, against the emulators and the serving process:
what the functions rely on when things go wrong (Firestore down, the endpoint down)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gemcast.api import log_record
from gemcast.errors import EndpointError
from gemcast.gcp import (
    FirestoreInventory,
    FirestorePredictionLog,
    VertexEndpoint,
    endpoint_path,
    from_document,
    vertex_session,
)
from gemcast.inventory import group_key
from gemcast_local.gcp_stack import ENDPOINT_ID, PROJECT, REGION, ServingProcess
from gemcast_local.servers import free_port
from tests.shared.stack import MODEL_VERSION

STONE = {"carat": 0.7, "cut": "Ideal", "color": "E", "clarity": "VS1", "depth": 61.5, "table": 55,
         "x": 5.7, "y": 5.72, "z": 3.52}


def record(request_id: str, stones: int = 1) -> dict[str, Any]:
    request = [STONE] * stones
    return log_record(request_id=request_id, caller="user-1", route="POST /v1/predictions", request=request,
                      response={"predictions": [{"price": 1234.5}] * stones}, status=200,
                      model_version=MODEL_VERSION, latency_ms=12.5)


def test_the_prediction_log_keeps_a_thousand_stone_request_whole(firestore_env: dict[str, str]) -> None:
    from google.cloud import firestore

    client = firestore.Client(project=PROJECT)
    log = FirestorePredictionLog(client, "predictions")
    big = record("req-big", stones=1000)

    assert log.write(big) is True and log.write(record("req-small")) is True

    stored = from_document(client.collection("predictions").document("req-big").get().to_dict())
    assert stored == big
    assert client.collection("predictions").document("req-small").get().to_dict()["caller"] == "user-1"


def test_a_firestore_outage_never_fails_the_request_and_keeps_the_record(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud import firestore

    # Nothing listens on this port: every write fails the way an unreachable Firestore does.
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    emitted: list[Mapping[str, Any]] = []
    failures: list[str] = []
    log = FirestorePredictionLog(firestore.Client(project=PROJECT), "predictions", backoff_s=0.01,
                                 timeout_s=1, on_failure=failures.append, emit=emitted.append)
    lost = record("req-lost")

    assert log.write(lost) is False

    assert log.lost == 1 and failures == ["retry", "retry", "retry", "lost"]
    (entry,) = emitted
    assert entry["severity"] == "ERROR" and entry["gemcast_event"] == "prediction_log_lost"
    assert entry["prediction_log_record"] == lost


def test_the_structured_fallback_line_is_one_json_object_on_stderr(
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from gemcast.gcp import emit_structured

    emit_structured({"severity": "ERROR", "message": "m", "prediction_log_record": record("r1")})

    line = capsys.readouterr().err
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line)["prediction_log_record"]["request_id"] == "r1"


def test_the_vertex_client_reaches_the_serving_process_on_the_rest_path(serving: ServingProcess) -> None:
    endpoint = VertexEndpoint(vertex_session(serving.url), serving.url, endpoint_path(PROJECT, REGION, ENDPOINT_ID))

    answer = endpoint.invoke([STONE, {**STONE, "carat": 1.5, "x": 7.3, "y": 7.35, "z": 4.52}])

    assert answer["model_version"] == MODEL_VERSION
    assert [p["price"] for p in answer["predictions"]] == [3000.0, 12000.0]
    assert all(p["reasons"] for p in answer["predictions"])


def test_an_unreachable_endpoint_is_a_503_within_the_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    endpoint = VertexEndpoint(vertex_session(url), url, endpoint_path(PROJECT, REGION, ENDPOINT_ID), timeout_s=1.0)

    with pytest.raises(EndpointError) as caught:
        endpoint.invoke([STONE])
    assert caught.value.status == 503
    assert url not in caught.value.public_message


class _VertexAnswers(BaseHTTPRequestHandler):
    """Answers ``:predict`` as Vertex AI does when things go wrong: google.rpc.Status JSON."""

    answers: list[tuple[int, bytes, float]] = []
    calls: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).calls.append(self.path)
        status, body, delay = type(self).answers.pop(0) if type(self).answers else (200, b"{}", 0.0)
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def rpc_status(code: int, status: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()


@pytest.mark.parametrize(("answers", "status", "calls"), [
    ([(429, rpc_status(429, "RESOURCE_EXHAUSTED", "quota"), 0.0)] * 3, 503, 3),  # retried, then 503
    ([(503, rpc_status(503, "UNAVAILABLE", "warming up"), 0.0),
      (200, b'{"predictions": [{"price": 1.0}], "deployedModelId": "7"}', 0.0)], None, 2),
    ([(500, rpc_status(500, "INTERNAL", "the container failed"), 0.0)], 503, 1),
    ([(400, rpc_status(400, "INVALID_ARGUMENT", "bad instances"), 0.0)], 502, 1),
    ([(404, rpc_status(404, "NOT_FOUND", "no endpoint"), 0.0)], 502, 1),
    ([(200, b"not json", 0.0)], 502, 1),
    ([(200, b'{"predictions": "none"}', 0.0)], 502, 1),
    ([(200, b"{}", 2.0)], 503, 1),  # slower than the budget
])
def test_vertex_error_answers_become_endpoint_errors_as_on_sagemaker(
        answers: list[tuple[int, bytes, float]], status: int | None, calls: int) -> None:
    _VertexAnswers.answers, _VertexAnswers.calls = list(answers), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VertexAnswers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    endpoint = VertexEndpoint(vertex_session(url), url, endpoint_path(PROJECT, REGION, ENDPOINT_ID),
                              timeout_s=1.0, sleep=lambda _s: None)
    try:
        if status is None:
            assert endpoint.invoke([STONE]) == {"predictions": [{"price": 1.0}], "model_version": "7"}
        else:
            with pytest.raises(EndpointError) as caught:
                endpoint.invoke([STONE])
            assert caught.value.status == status
            assert "the model endpoint" in caught.value.public_message
    finally:
        server.shutdown()
        server.server_close()
    assert len(_VertexAnswers.calls) == calls
    assert set(_VertexAnswers.calls) == {f"/v1/{endpoint_path(PROJECT, REGION, ENDPOINT_ID)}:predict"}


def test_similar_uses_two_range_queries_and_matches_a_full_sort(firestore_env: dict[str, str]) -> None:
    from google.cloud import firestore

    rng = random.Random(7)
    stones = [{**STONE, "carat": round(rng.uniform(0.2, 3.0), 2), "price": rng.randint(400, 20000)}
              for _ in range(120)]
    stones += [{**STONE, "carat": 0.7, "price": 2222}, {**STONE, "cut": "Good", "carat": 0.7, "price": 999}]
    inventory = FirestoreInventory(firestore.Client(project=PROJECT), "inventory")
    assert inventory.put_stones(stones) == len(stones)
    assert inventory.put_stones(stones) == len(stones)  # the same batch again: no duplicates

    for carat in (0.2, 0.7, 1.234, 3.0):
        got = inventory.similar(carat, "Ideal", "E", "VS1", 7)
        ideal = {(s["carat"], s["price"]) for s in stones if s["cut"] == "Ideal"}
        expected = sorted(ideal, key=lambda s: (abs(s[0] - carat), s[0]))[:7]
        assert [abs(s["carat"] - carat) for s in got] == pytest.approx([abs(c - carat) for c, _ in expected])
        assert all(s["cut"] == "Ideal" for s in got)
    docs = firestore.Client(project=PROJECT).collection("inventory").count().get()[0][0].value
    assert docs == len({(s["cut"], s["carat"], s["price"]) for s in stones})
    assert group_key("Ideal", "E", "VS1") == "Ideal#E#VS1"


def test_a_firestore_outage_costs_the_caller_at_most_a_few_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    log = FirestorePredictionLog(firestore.Client(project=PROJECT), "predictions", backoff_s=0.01,
                                 timeout_s=1, emit=lambda entry: None)
    started = time.monotonic()
    log.write(record("req-slow"))
    assert time.monotonic() - started < 10
