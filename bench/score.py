"""``gemcast score`` on 1,000,000 generated stones: rows a second and peak memory.

The stones are the bundled data's rows drawn with replacement (seeded), written once as a CSV of
about 50 MB; ``gemcast score`` runs as its own process, so its peak RSS is its own.
``BENCH_REGISTRY`` reuses a registry with a champion, as in bench/invocations.py.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import print_table, write_result
from bench.invocations import registry_uri
from bench.stones import _accepted
from gemcast.schema import FEATURES

ROWS = int(os.environ.get("BENCH_SCORE_ROWS", "1000000"))


def generate(path: Path, rows: int, seed: int = 0) -> None:
    pool = [",".join(str(r[f]) for f in FEATURES) + "\n" for r in _accepted()]
    rng = random.Random(seed)
    with path.open("w") as out:
        out.write(",".join(FEATURES) + "\n")
        for start in range(0, rows, 100_000):
            out.write("".join(rng.choices(pool, k=min(100_000, rows - start))))


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        registry = registry_uri(tmp)
        source = tmp / "stones.csv"
        generate(source, ROWS)
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "gemcast.cli", "score", "--input", str(source), "--output",
                               str(tmp / "priced.csv"), "--registry", registry, "--json"],
                              capture_output=True, text=True, check=True)
        wall = time.monotonic() - started
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        summary = json.loads(done.stdout)
        size_mib = source.stat().st_size / 2**20
    result = {"rows": summary["rows"], "priced": summary["priced"], "input_mib": round(size_mib, 1),
              "score_seconds": summary["seconds"], "wall_seconds_with_start": round(wall, 2),
              "rows_per_second": summary["rows_per_second"], "peak_rss_mib": round(peak_mib, 1)}
    write_result("score", result)
    print_table(
        f"gemcast score on {ROWS:,} generated stones (CSV, {size_mib:.0f} MiB)",
        [
            ("rows priced", f"{result['priced']:,} of {result['rows']:,}", "every row answered"),
            ("time (process start included)", f"{result['score_seconds']:.1f} s ({wall:.1f} s)", "<= 30 s"),
            ("rows a second", f"{result['rows_per_second']:,}", ""),
            ("peak RSS", f"{result['peak_rss_mib']:.0f} MiB", "flat (does not grow with rows)"),
        ],
    )
    return result
