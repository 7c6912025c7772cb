"""Small helpers for the benchmarks: timing loops, percentiles, result files, tables."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def time_calls(fn: Callable[[], Any], *, repeat: int, warmup: int = 3) -> dict[str, float]:
    """p50 and p99 of ``repeat`` calls, in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 4),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 4),
        "n": repeat,
    }


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """rows: (what, figure, target)."""
    width = max(len(r[0]) for r in rows)
    fig_width = max(len(r[1]) for r in rows)
    print(f"\n{title}")
    print(f"  {'what':<{width}}  {'figure':>{fig_width}}  target")
    for what, figure, target in rows:
        print(f"  {what:<{width}}  {figure:>{fig_width}}  {target}")


def run_clients(target: Callable[..., Any], args: list[tuple[Any, ...]]) -> float:
    """Run ``target(*a)`` for each ``a`` in ``args`` on its own thread, all at once; the
    wall-clock seconds until the last one ends."""
    import threading

    started = time.monotonic()
    threads = [threading.Thread(target=target, args=a) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - started


@contextlib.contextmanager
def bench_stack() -> Iterator[Any]:
    """A local stack (``BENCH_MODEL_KIND``, default gbm) on free ports, started and stopped
    around a benchmark; the handlers' metric lines (EMF on stdout) are kept out of the tables."""
    from gemcast_local.servers import free_port
    from gemcast_local.stack import LocalStack, StackConfig

    kind = os.environ.get("BENCH_MODEL_KIND", "gbm")
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        config = StackConfig(state_dir=Path(tmp) / ".gemcast", api_port=free_port(), serve_port=free_port(),
                             web_port=free_port(), kind=kind, serve_workers=2)
        with LocalStack(config, say=lambda _m: None) as stack:
            assert stack.serving is not None and stack.gateway is not None
            yield stack
