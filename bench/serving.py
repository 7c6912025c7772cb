"""Serving benchmark: the model server, the proxy, and the local stack end to end.

Starts the local stack (moto server, serving process, local API gateway) on free ports and
measures, with real HTTP on 127.0.0.1:
- serving start-to-healthy time; ``/invocations`` for 1 and 1,000 stones;
- the predict_proxy handler in process (validation, the endpoint call, the log write);
- end to end through the gateway (JWT check, handler, endpoint, log) with 1 client and with
  20 concurrent clients for 30 s, then checks that the prediction log holds every request.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import requests

from bench.common import bench_stack, print_table, run_clients, time_calls, write_result
from gemcast.schema import EXAMPLE_STONE
from gemcast_local.stack import LocalStack

REPO = Path(__file__).resolve().parents[1]
STONE = EXAMPLE_STONE
CONCURRENT_CLIENTS = 20
CONCURRENT_SECONDS = float(os.environ.get("BENCH_CONCURRENT_SECONDS", "30"))


def _batch(n: int) -> list[dict[str, Any]]:
    return [{**STONE, "carat": round(0.3 + (i % 150) / 100, 2), "x": 4.3 + (i % 150) / 60,
             "y": 4.32 + (i % 150) / 60, "z": 2.66 + (i % 150) / 97} for i in range(n)]


def _load(stack: LocalStack, threads: int) -> dict[str, Any]:
    """``threads`` clients, each with its own keep-alive session, for CONCURRENT_SECONDS."""
    url = f"{stack.gateway.url}/v1/predictions"  # type: ignore[union-attr]
    headers = {"Authorization": stack.id_token(), "Content-Type": "application/json"}
    body = json.dumps(STONE)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    request_ids: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + CONCURRENT_SECONDS

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            response = session.post(url, data=body, headers=headers, timeout=30)
            elapsed = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    request_ids.append(response.json()["request_id"])

    wall = run_clients(client, [()] * threads)
    latencies.sort()
    table = boto3.resource("dynamodb", **_boto_args(stack)).Table(stack.resource_name("PredictionLogTable"))
    logged = sum(1 for rid in request_ids if "Item" in table.get_item(Key={"request_id": rid}))
    return {
        "clients": threads,
        "seconds": round(wall, 1),
        "requests": len(latencies),
        "statuses": statuses,
        "throughput_rps": round(len(latencies) / wall, 1),
        "p50_ms": round(latencies[len(latencies) // 2], 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
        "logged": logged,
        "ok": len(request_ids),
    }


def _boto_args(stack: LocalStack) -> dict[str, str]:
    env = stack.aws_env
    return {"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": env["AWS_DEFAULT_REGION"],
            "aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}


def run() -> dict[str, Any]:
    kind = os.environ.get("BENCH_MODEL_KIND", "gbm")
    with bench_stack() as stack:
        serve_start = stack.serving.start_seconds
        session = requests.Session()
        inv = f"{stack.serving.url}/invocations"
        one = json.dumps({"instances": [STONE]})
        thousand = json.dumps({"instances": _batch(1000)})
        thousand_prices = json.dumps({"instances": _batch(1000), "parameters": {"reasons": False}})
        invocations_1 = time_calls(lambda: session.post(inv, data=one).raise_for_status(), repeat=300)
        invocations_1000 = time_calls(lambda: session.post(inv, data=thousand).raise_for_status(), repeat=10)
        invocations_1000_prices = time_calls(
            lambda: session.post(inv, data=thousand_prices).raise_for_status(), repeat=20)

        proxy = stack.function("PredictProxyFunction")  # the container the gateway calls
        event = json.loads((REPO / "events" / "predict_proxy_one_stone.json").read_text())
        handler = time_calls(lambda: proxy(event), repeat=200)

        api = f"{stack.gateway.url}/v1/predictions"
        headers = {"Authorization": stack.id_token(), "Content-Type": "application/json"}
        body = json.dumps(STONE)
        e2e_1 = time_calls(lambda: session.post(api, data=body, headers=headers).raise_for_status(), repeat=300)
        load = _load(stack, CONCURRENT_CLIENTS)
    result = {
        "model_kind": kind,
        "serving_start_to_healthy_s": round(serve_start or 0.0, 2),
        "invocations_1_stone": invocations_1,
        "invocations_1000_stones_with_reasons": invocations_1000,
        "invocations_1000_stones_prices_only": invocations_1000_prices,
        "proxy_handler_in_process": handler,
        "proxy_overhead_p50_ms": round(handler["p50_ms"] - invocations_1["p50_ms"], 3),
        "end_to_end_1_client": e2e_1,
        "end_to_end_20_clients": load,
    }
    write_result("serving", result)
    print_table(
        "Serving and the local stack (127.0.0.1, real HTTP)",
        [
            ("serving start to healthy", f"{result['serving_start_to_healthy_s']:.2f} s", ""),
            ("/invocations 1 stone p50 / p99", f"{invocations_1['p50_ms']:.2f} / {invocations_1['p99_ms']:.2f} ms",
             "p50 <= 3 ms"),
            ("/invocations 1,000 stones with reasons p50",
             f"{invocations_1000['p50_ms']:.1f} ms", ""),
            ("/invocations 1,000 stones prices only p50",
             f"{invocations_1000_prices['p50_ms']:.1f} ms", ""),
            ("proxy handler in process p50 / p99", f"{handler['p50_ms']:.2f} / {handler['p99_ms']:.2f} ms", ""),
            ("proxy overhead over the endpoint p50", f"{result['proxy_overhead_p50_ms']:.2f} ms", ""),
            ("end to end, 1 client p50 / p99", f"{e2e_1['p50_ms']:.2f} / {e2e_1['p99_ms']:.2f} ms",
             "p50 <= 20 ms"),
            (f"end to end, {load['clients']} clients, {load['seconds']:.0f} s",
             f"{load['throughput_rps']:.0f} req/s, p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms", ""),
            ("  statuses", json.dumps(load["statuses"]), "no errors"),
            ("  logged / answered", f"{load['logged']} / {load['ok']}", "every request logged"),
        ],
    )
    return result
