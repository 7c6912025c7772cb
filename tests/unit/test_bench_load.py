"""bench/load.py's paced mode: the usage plan's burst and rate, every request sent once and counted."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.load import _paced, usage_plan
from gemcast_local.provision import parameter_defaults
from gemcast_local.template import load_template

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[tuple[str, list[int]]]:
    seen: list[int] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                seen.append(body["i"])
            status = 429 if body["i"] == 3 else 200  # one refusal: counted by its status
            self.send_response(status)
            self.send_header("x-amzn-RequestId", f"r-{body['i']}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/predictions", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_paced_sends_the_burst_then_the_rate_each_request_once(server: tuple[str, list[int]]) -> None:
    url, seen = server
    result = _paced(url, {"Content-Type": "application/json"}, lambda i: {"i": i}, rate=40.0, burst=5, seconds=0.25)
    assert result["sent"] == 5 + 10 and result["answered"] == 15
    assert sorted(seen) == list(range(15))
    assert result["statuses"] == {"200": 14, "429": 1}
    assert sorted(result["request_ids"]) == sorted(f"r-{i}" for i in range(15))
    assert result["rate_per_s"] == 40.0 and result["burst"] == 5


def test_the_usage_plan_is_the_templates_throttle_parameters() -> None:
    template = load_template(REPO / "template.yaml")
    stack = SimpleNamespace(values=parameter_defaults(template))
    rate, burst = usage_plan(stack)  # type: ignore[arg-type]
    assert rate == float(template["Parameters"]["ApiThrottleRateLimit"]["Default"])
    assert burst == int(template["Parameters"]["ApiThrottleBurstLimit"]["Default"])
