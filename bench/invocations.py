"""The serving image's own contract, beside gunicorn + Flask serving scikit-learn's own model.

In one run, on the same 1,000 varied stones (rows of the bundled data, never one stone repeated):
- ``/invocations``: 1 stone and 1,000 stones, JSON and CSV, prices only and with reasons;
- the reference (bench/reference_app.py, 2 gunicorn workers, one thread of BLAS/OpenMP each) on
  the same 1 and 1,000 stones;
- requests/s of one stone with 8 clients, both servers;
- in process: one stone with its reasons (Predictor.price), 1,000 stones with reasons.

``BENCH_REGISTRY=file:///...`` reuses a registry with a champion; otherwise a gbm model is
trained on the bundled data first (about a minute).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.common import print_table, run_clients, time_calls, write_result
from bench.stones import csv_lines, varied_stones
from gemcast_local.servers import StandInServer
from gemcast_local.stack import ModelServer

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 8
LOAD_SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "10"))


class ReferenceServer(StandInServer):
    name = "reference"
    probe_path = "/ping"
    default_timeout_s = 60.0

    def __init__(self, model_path: str, **kwargs: Any) -> None:
        env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        super().__init__(extra_env=env, **kwargs)
        self.model_path = model_path

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "gunicorn"), "-w", "2", "-k", "gthread", "--threads", "4",
                "-b", f"{self.host}:{self.port}", f"bench.reference_app:create_app({self.model_path!r})"]

    def env(self) -> dict[str, str]:
        return {}


def registry_uri(tmp: Path) -> str:
    if os.environ.get("BENCH_REGISTRY"):
        return os.environ["BENCH_REGISTRY"]
    from gemcast.pipeline import run_training

    uri = (tmp / "models").as_uri()
    run_training(str(REPO / "data" / "diamonds.csv"), uri, kind="gbm", budget_s=30, max_trials=2, progress=None)
    return uri


class Poster:
    """One keep-alive http.client connection posting to ``url``: the timed client of both servers.

    A requests.Session costs about half a millisecond of the client's own CPU a call, which a
    1 ms figure cannot carry; http.client costs a tenth of that (and the same for both servers).
    """

    def __init__(self, url: str) -> None:
        where = urllib.parse.urlsplit(url)
        self.path = where.path
        self.connection = http.client.HTTPConnection(where.hostname, where.port, timeout=60)

    def post(self, data: bytes, headers: dict[str, str]) -> bytes:
        sent = {**headers, "Content-Length": str(len(data))}
        try:
            self.connection.request("POST", self.path, body=data, headers=sent)
            answer = self.connection.getresponse()
        except ConnectionError:  # http.client.RemoteDisconnected is one
            # The server closed the idle keep-alive connection (gunicorn's keepalive is 2 s by
            # default): connect again, as requests does.
            self.connection.close()
            self.connection.request("POST", self.path, body=data, headers=sent)
            answer = self.connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"POST {self.path}: {answer.status} {body[:200]!r}")
        return body


def rate(url: str, body: str, headers: dict[str, str], clients: int = CLIENTS) -> dict[str, Any]:
    """``clients`` keep-alive clients posting ``body`` for LOAD_SECONDS: requests/s and statuses.

    The clients are http.client connections (a tenth of the CPU of a requests.Session a call),
    so that on a 2-core machine the load generator does not take the cores the server needs.
    """
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + LOAD_SECONDS
    data = body.encode()

    def client() -> None:
        poster = Poster(url)
        sent = {**headers, "Content-Length": str(len(data))}
        while time.monotonic() < deadline:
            poster.connection.request("POST", poster.path, body=data, headers=sent)
            answer = poster.connection.getresponse()
            answer.read()
            with lock:
                statuses[answer.status] = statuses.get(answer.status, 0) + 1
        poster.connection.close()

    wall = run_clients(client, [()] * clients)
    total = sum(statuses.values())
    return {"clients": clients, "requests": total, "statuses": statuses,
            "requests_per_s": round(total / wall, 1)}


def run() -> dict[str, Any]:
    stones = varied_stones(1000)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        registry = registry_uri(tmp)
        reference_model = tmp / "reference.pkl"
        subprocess.run([sys.executable, "-m", "bench.reference_app", "fit", str(reference_model)], check=True,
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        from threadpoolctl import threadpool_limits

        from gemcast.predict import Predictor
        from gemcast.registry import Registry

        loaded = Registry(registry).load_champion()
        predictor = Predictor(loaded.model, loaded.version)
        loaded.model.fast_predictor()
        loaded.model.compiled_walk()  # as the model server does at start
        limits = threadpool_limits(1)  # one BLAS/OpenMP thread, as in each serving worker
        for stone in stones[:20]:  # warm up
            predictor.price([stone])
        one_samples = []
        for i in range(300):
            t0 = time.perf_counter()
            predictor.price([stones[i]])
            one_samples.append((time.perf_counter() - t0) * 1000)
        one_samples.sort()
        one_in_process = {"p50_ms": round(one_samples[150], 4), "p99_ms": round(one_samples[296], 4), "n": 300}
        thousand_in_process = time_calls(lambda: predictor.price(stones), repeat=5, warmup=1)
        limits.unregister()

        json_h = {"Content-Type": "application/json"}
        csv_h = {"Content-Type": "text/csv", "Accept": "text/csv"}
        results: dict[str, Any] = {"model_version": loaded.version, "n_trees": loaded.model.n_trees}
        with ModelServer(registry, workers=2) as server, \
                ReferenceServer(str(reference_model)) as reference:
            inv, ref = f"{server.url}/invocations", f"{reference.url}/invocations"
            connections: dict[str, Poster] = {}

            def post(url: str, body: str, headers: dict[str, str]) -> None:
                connections.setdefault(url, Poster(url)).post(body.encode(), headers)

            def varied_one(url: str, headers: dict[str, str], encode: Any) -> dict[str, float]:
                bodies = [encode([s]) for s in stones[:300]]
                it = iter(range(10**9))
                return time_calls(lambda: post(url, bodies[next(it) % 300], headers), repeat=300)

            prices = lambda b: json.dumps({"instances": b, "parameters": {"reasons": False}})  # noqa: E731
            reasons = lambda b: json.dumps({"instances": b})  # noqa: E731
            results["one_json_prices"] = varied_one(inv, json_h, prices)
            results["one_json_reasons"] = varied_one(inv, json_h, reasons)
            results["one_csv"] = varied_one(inv, csv_h, csv_lines)
            results["reference_one"] = varied_one(ref, json_h, reasons)
            results["thousand_json_prices"] = time_calls(lambda: post(inv, prices(stones), json_h), repeat=30)
            results["thousand_csv"] = time_calls(lambda: post(inv, csv_lines(stones), csv_h), repeat=30)
            results["thousand_json_reasons"] = time_calls(lambda: post(inv, reasons(stones), json_h), repeat=5,
                                                          warmup=1)
            results["thousand_jsonl_reasons"] = time_calls(
                lambda: post(inv, "".join(json.dumps(s) + "\n" for s in stones),
                             {"Content-Type": "application/jsonlines"}), repeat=5, warmup=1)
            results["reference_thousand"] = time_calls(lambda: post(ref, reasons(stones), json_h), repeat=30)
            one = json.dumps({"instances": [stones[0]], "parameters": {"reasons": False}})
            results["rate_one_prices"] = rate(inv, one, json_h)
            results["reference_rate_one"] = rate(ref, json.dumps({"instances": [stones[0]]}), json_h)
    results["in_process_one_with_reasons"] = one_in_process
    results["in_process_thousand_with_reasons"] = thousand_in_process
    write_result("invocations", results)
    r = results

    def ms(key: str) -> str:
        return f"{r[key]['p50_ms']:.2f} / {r[key]['p99_ms']:.2f} ms"

    print_table(
        f"/invocations on 1,000 varied stones ({r['n_trees']} trees) beside gunicorn + Flask + scikit-learn",
        [
            ("1 stone, JSON, prices p50 / p99", ms("one_json_prices"), "p50 <= 1 ms"),
            ("1 stone, JSON, with reasons", ms("one_json_reasons"), ""),
            ("1 stone, CSV", ms("one_csv"), ""),
            ("  reference, 1 stone", ms("reference_one"), ""),
            ("1,000 stones, JSON, prices", ms("thousand_json_prices"), "p50 <= 12 ms, < reference"),
            ("1,000 stones, CSV", ms("thousand_csv"), "p50 <= 12 ms, < reference"),
            ("  reference, 1,000 stones", ms("reference_thousand"), ""),
            ("1,000 stones, JSON, with reasons", ms("thousand_json_reasons"), "<= 300 ms"),
            ("1,000 stones, JSON lines, with reasons", ms("thousand_jsonl_reasons"), ""),
            (f"1 stone, {CLIENTS} clients", f"{r['rate_one_prices']['requests_per_s']:.0f} req/s "
             f"{json.dumps(r['rate_one_prices']['statuses'])}", ">= 4,000 req/s"),
            (f"  reference, {CLIENTS} clients", f"{r['reference_rate_one']['requests_per_s']:.0f} req/s", ""),
            ("in process: 1 stone with reasons", ms("in_process_one_with_reasons"), "<= 1 ms"),
            ("in process: 1,000 stones with reasons", ms("in_process_thousand_with_reasons"), ""),
        ],
    )
    return results
