"""Bounded load: N clients for T seconds through the local gateway, then straight at the model
server, counting answers by status and, for the gateway, the prediction log records: equal.

Every request through the gateway is answered with a status and logged whatever the status, so
the records found (the log table, or the dead-letter queue when the table failed) must equal the
answers; a request without an answer (connection dropped, timeout) is counted apart.

    python -m bench.run load     # BENCH_LOAD_CLIENTS (50), BENCH_LOAD_SECONDS (60)
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from typing import Any

import requests

from bench.common import bench_stack, print_table, run_clients, write_result
from gemcast.aws import records_from_dead_letters
from gemcast.schema import EXAMPLE_STONE
from gemcast_local.stack import LocalStack

CLIENTS = int(os.environ.get("BENCH_LOAD_CLIENTS", "50"))
SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "60"))


def _stone(i: int) -> dict[str, Any]:
    """Varied stones, each consistent: dimensions scale with the cube root of the weight."""
    carat = round(0.3 + (i % 97) / 50, 2)
    scale = (carat / float(EXAMPLE_STONE["carat"])) ** (1 / 3)
    return {**EXAMPLE_STONE, "carat": carat,
            **{axis: round(float(EXAMPLE_STONE[axis]) * scale, 2) for axis in ("x", "y", "z")}}


def _hammer(url: str, headers: dict[str, str], body_of: Any, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads, each with its own keep-alive session, posting until the deadline."""
    statuses: Counter[str] = Counter()
    request_ids: list[str] = []
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(n: int) -> None:
        session = requests.Session()
        i = n
        while time.monotonic() < deadline:
            i += clients
            t0 = time.perf_counter()
            try:
                response = session.post(url, data=json.dumps(body_of(i)), headers=headers, timeout=60)
            except requests.RequestException as exc:
                with lock:
                    statuses[f"no answer ({type(exc).__name__})"] += 1
                continue
            elapsed = (time.perf_counter() - t0) * 1000
            rid = response.headers.get("x-amzn-RequestId")
            with lock:
                statuses[str(response.status_code)] += 1
                latencies.append(elapsed)
                if rid:
                    request_ids.append(rid)

    wall = run_clients(client, [(n,) for n in range(clients)])
    latencies.sort()
    answered = len(latencies)
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "answered": answered,
        "statuses": dict(sorted(statuses.items())),
        "throughput_rps": round(answered / wall, 1) if wall else 0.0,
        "p50_ms": round(latencies[answered // 2], 1) if latencies else None,
        "p99_ms": round(latencies[min(answered - 1, int(answered * 0.99))], 1) if latencies else None,
        "request_ids": request_ids,
    }


def _logged(stack: LocalStack, request_ids: list[str]) -> dict[str, int]:
    """How many of ``request_ids`` have a record in the log table, and in the dead-letter queue."""
    dynamodb = stack.client("dynamodb")
    in_table: set[str] = set()
    for page in dynamodb.get_paginator("scan").paginate(
            TableName=stack.resource_name("PredictionLogTable"), ProjectionExpression="request_id"):
        in_table.update(item["request_id"]["S"] for item in page.get("Items", []))
    sqs = stack.client("sqs")
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=stack.resource_name("PredictionLogDLQ"), MaxNumberOfMessages=10,
                                  WaitTimeSeconds=0).get("Messages", [])
        if not got:
            break
        bodies.extend(m["Body"] for m in got)
    in_dlq = {str(r.get("request_id")) for r in records_from_dead_letters(bodies)}
    wanted = set(request_ids)
    return {"in_table": len(wanted & in_table), "in_dlq": len(wanted & in_dlq - in_table),
            "missing": len(wanted - in_table - in_dlq)}


def run() -> dict[str, Any]:
    kind = os.environ.get("BENCH_MODEL_KIND", "gbm")
    with bench_stack() as stack:
        headers = {"Authorization": stack.id_token(), "Content-Type": "application/json"}
        gateway = _hammer(f"{stack.gateway.url}/v1/predictions", headers, _stone, CLIENTS, SECONDS)
        gateway["logged"] = _logged(stack, gateway.pop("request_ids"))
        direct = _hammer(f"{stack.serving.url}/invocations", {"Content-Type": "application/json"},
                         lambda i: {"instances": [_stone(i)]}, CLIENTS, SECONDS)
        direct.pop("request_ids")
    result = {"model_kind": kind, "gateway": gateway, "model_server": direct}
    write_result("load", result)
    logged = gateway["logged"]
    print_table(
        f"Load: {CLIENTS} clients for {SECONDS:.0f} s (127.0.0.1, real HTTP)",
        [
            ("through the gateway", f"{gateway['answered']} answered, {gateway['throughput_rps']:.0f} req/s, "
             f"p50 {gateway['p50_ms']} ms, p99 {gateway['p99_ms']} ms", "every request answered"),
            ("  statuses", json.dumps(gateway["statuses"]), ""),
            ("  log records (table + DLQ) / answered",
             f"{logged['in_table']} + {logged['in_dlq']} / {gateway['answered']}, {logged['missing']} missing",
             "equal, 0 missing"),
            ("straight at the model server", f"{direct['answered']} answered, {direct['throughput_rps']:.0f} req/s, "
             f"p50 {direct['p50_ms']} ms, p99 {direct['p99_ms']} ms", "every request answered"),
            ("  statuses", json.dumps(direct["statuses"]), ""),
        ],
    )
    return result
