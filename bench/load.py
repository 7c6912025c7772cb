"""Load through the local gateway, then straight at the model server, counting answers by status
and, for the gateway, the prediction log records: equal.

Every request through the gateway is answered with a status and logged whatever the status, so
the records found (the log table, or the dead-letter queue when the table failed) must equal the
answers; a request without an answer (connection dropped, timeout) is counted apart.

Two modes (``BENCH_LOAD_MODE``: ``paced``, ``clients`` or ``both``, the default):
- paced: the API usage plan's own limits, read from the stack's template parameters
  (``ApiThrottleBurstLimit`` requests at once, then ``ApiThrottleRateLimit`` a second, sent on
  a fixed schedule whatever the answers' times, as independent users arrive);
- clients: BENCH_LOAD_CLIENTS (50) clients, each posting again as soon as it is answered.

    python -m bench.run load     # BENCH_LOAD_SECONDS (60) for each
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
MODE = os.environ.get("BENCH_LOAD_MODE", "both")


def _stone(i: int) -> dict[str, Any]:
    """Varied stones, each consistent: dimensions scale with the cube root of the weight."""
    carat = round(0.3 + (i % 97) / 50, 2)
    scale = (carat / float(EXAMPLE_STONE["carat"])) ** (1 / 3)
    return {**EXAMPLE_STONE, "carat": carat,
            **{axis: round(float(EXAMPLE_STONE[axis]) * scale, 2) for axis in ("x", "y", "z")}}


class _Tally:
    """Answers by status, their request ids and latencies, from any number of client threads."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()
        self.request_ids: list[str] = []
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.sessions = threading.local()

    def post(self, url: str, headers: dict[str, str], body: Any) -> None:
        """One request on this thread's keep-alive session, counted."""
        session = getattr(self.sessions, "session", None) or requests.Session()
        self.sessions.session = session
        t0 = time.perf_counter()
        try:
            response = session.post(url, data=json.dumps(body), headers=headers, timeout=60)
        except requests.RequestException as exc:
            with self.lock:
                self.statuses[f"no answer ({type(exc).__name__})"] += 1
            return
        elapsed = (time.perf_counter() - t0) * 1000
        rid = response.headers.get("x-amzn-RequestId")
        with self.lock:
            self.statuses[str(response.status_code)] += 1
            self.latencies.append(elapsed)
            if rid:
                self.request_ids.append(rid)

    def summary(self, wall: float, **more: Any) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        answered = len(latencies)
        return {
            **more,
            "seconds": round(wall, 1),
            "answered": answered,
            "statuses": dict(sorted(self.statuses.items())),
            "throughput_rps": round(answered / wall, 1) if wall else 0.0,
            "p50_ms": round(latencies[answered // 2], 1) if latencies else None,
            "p99_ms": round(latencies[min(answered - 1, int(answered * 0.99))], 1) if latencies else None,
            "request_ids": self.request_ids,
        }


def _hammer(url: str, headers: dict[str, str], body_of: Any, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads, each with its own keep-alive session, posting until the deadline."""
    tally = _Tally()
    deadline = time.monotonic() + seconds

    def client(n: int) -> None:
        i = n
        while time.monotonic() < deadline:
            i += clients
            tally.post(url, headers, body_of(i))

    wall = run_clients(client, [(n,) for n in range(clients)])
    return tally.summary(wall, clients=clients)


def _paced(url: str, headers: dict[str, str], body_of: Any, rate: float, burst: int, seconds: float
           ) -> dict[str, Any]:
    """``burst`` requests at once, then ``rate`` a second on a fixed schedule for ``seconds``.

    The schedule does not wait for answers (a slow answer does not slow the arrivals, as with
    real users): each request is sent by the first of ``burst`` threads that is free. How late
    the sends ran behind the schedule is reported (a late send means the client fell behind,
    not the server).
    """
    import queue

    tally = _Tally()
    due: queue.Queue[tuple[int, float] | None] = queue.Queue()
    late: list[float] = []
    started = time.monotonic()
    for i in range(burst):
        due.put((i, started))
    n_paced = int(seconds * rate)
    for k in range(n_paced):
        due.put((burst + k, started + 1.0 + k / rate))  # the burst first, then the steady rate
    for _ in range(burst):
        due.put(None)

    def sender() -> None:
        while (item := due.get()) is not None:
            i, at = item
            wait = at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                late.append(-wait)
            tally.post(url, headers, body_of(i))

    wall = run_clients(sender, [()] * burst)
    late.sort()
    return tally.summary(wall, rate_per_s=rate, burst=burst, sent=burst + n_paced,
                         late_sends_p99_ms=round(late[int(len(late) * 0.99)] * 1000, 1) if late else 0.0)


def _logged(stack: LocalStack, request_ids: list[str]) -> dict[str, int]:
    """How many of ``request_ids`` have a record in the log table, and in the dead-letter queue."""
    dynamodb = stack.client("dynamodb")
    in_table: set[str] = set()
    for page in dynamodb.get_paginator("scan").paginate(
            TableName=stack.values["PredictionLogTable"], ProjectionExpression="request_id"):
        in_table.update(item["request_id"]["S"] for item in page.get("Items", []))
    sqs = stack.client("sqs")
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=stack.values["PredictionLogDLQ"], MaxNumberOfMessages=10,
                                  WaitTimeSeconds=0).get("Messages", [])
        if not got:
            break
        bodies.extend(m["Body"] for m in got)
    in_dlq = {str(r.get("request_id")) for r in records_from_dead_letters(bodies)}
    wanted = set(request_ids)
    return {"in_table": len(wanted & in_table), "in_dlq": len(wanted & in_dlq - in_table),
            "missing": len(wanted - in_table - in_dlq)}


def usage_plan(stack: LocalStack) -> tuple[float, int]:
    """(requests a second, burst) of the API's usage plan: the stack's template parameters."""
    return float(stack.values["ApiThrottleRateLimit"]), int(stack.values["ApiThrottleBurstLimit"])


def run() -> dict[str, Any]:
    kind = os.environ.get("BENCH_MODEL_KIND", "gbm")
    if MODE not in {"paced", "clients", "both"}:
        raise SystemExit(f"BENCH_LOAD_MODE must be paced, clients or both, got {MODE!r}")
    result: dict[str, Any] = {"model_kind": kind}
    rows: list[tuple[str, str, str]] = []
    with bench_stack() as stack:
        headers = {"Authorization": stack.id_token(), "Content-Type": "application/json"}
        predictions = f"{stack.gateway.url}/v1/predictions"
        if MODE in {"paced", "both"}:
            rate, burst = usage_plan(stack)
            paced = _paced(predictions, headers, _stone, rate, burst, SECONDS)
            paced["logged"] = _logged(stack, paced.pop("request_ids"))
            result["paced"] = paced
            rows += _gateway_rows(f"usage plan: {burst} at once, then {rate:g}/s for {SECONDS:.0f} s", paced)
            rows.append(("  sends behind schedule, p99", f"{paced['late_sends_p99_ms']} ms", ""))
        if MODE in {"clients", "both"}:
            gateway = _hammer(predictions, headers, _stone, CLIENTS, SECONDS)
            gateway["logged"] = _logged(stack, gateway.pop("request_ids"))
            direct = _hammer(f"{stack.serving.url}/invocations", {"Content-Type": "application/json"},
                             lambda i: {"instances": [_stone(i)]}, CLIENTS, SECONDS)
            direct.pop("request_ids")
            result.update(gateway=gateway, model_server=direct)
            rows += _gateway_rows(f"{CLIENTS} clients through the gateway for {SECONDS:.0f} s", gateway)
            rows += [
                ("straight at the model server", f"{direct['answered']} answered, {direct['throughput_rps']:.0f} "
                 f"req/s, p50 {direct['p50_ms']} ms, p99 {direct['p99_ms']} ms", "every request answered"),
                ("  statuses", json.dumps(direct["statuses"]), ""),
            ]
    write_result("load", result)
    print_table("Load (127.0.0.1, real HTTP)", rows)
    return result


def _gateway_rows(what: str, run: dict[str, Any]) -> list[tuple[str, str, str]]:
    logged = run["logged"]
    return [
        (what, f"{run['answered']} answered, {run['throughput_rps']:.0f} req/s, "
         f"p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms", "every request answered"),
        ("  statuses", json.dumps(run["statuses"]), "no error"),
        ("  log records (table + DLQ) / answered",
         f"{logged['in_table']} + {logged['in_dlq']} / {run['answered']}, {logged['missing']} missing",
         "equal, 0 missing"),
    ]
