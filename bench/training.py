"""Training benchmark: the default model on diamonds_large.csv, its held-out scores and speed."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import print_table, time_calls, write_result
from gemcast.pipeline import Progress, run_training
from gemcast.registry import Registry
from gemcast.schema import encode

DATA = Path(__file__).resolve().parents[1] / "data" / "diamonds_large.csv"


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        uri = (Path(tmp) / "models").as_uri()
        t0 = time.perf_counter()
        outcome = run_training(str(DATA), uri, progress=Progress(lambda _m: None))
        train_s = time.perf_counter() - t0
        registry = Registry(uri)
        manifest = registry.manifest(outcome.version)
        loaded = registry.load(outcome.version)
    model = loaded.model
    stone = np.array([encode({"carat": 0.7, "cut": "Ideal", "color": "E", "clarity": "VS1", "depth": 61.8,
                              "table": 56.0, "x": 5.7, "y": 5.73, "z": 3.53})])
    rng = np.random.default_rng(0)
    batch = np.repeat(stone, 1000, axis=0)
    batch[:, 0] = rng.uniform(0.23, 2.5, 1000)
    batch[:, 1:4] = np.column_stack([rng.integers(0, 5, 1000), rng.integers(0, 7, 1000), rng.integers(0, 8, 1000)])
    one = time_calls(lambda: model.predict(stone), repeat=2000)
    thousand = time_calls(lambda: model.predict(batch), repeat=50)
    explain_one = time_calls(lambda: model.reasons_batch(stone), repeat=300)
    m = outcome.metrics
    result = {
        "data": str(DATA.name),
        "version": outcome.version,
        "metrics": m,
        "baseline_linear": manifest["metrics"]["baseline_linear"],
        "training_seconds": round(train_s, 2),
        "stage_seconds": manifest["timings"],
        "params": manifest["model"]["params"],
        "n_trees": model.n_trees,
        "model_file_bytes": manifest["sizes"]["model.npz"],
        "predict_1_stone": one,
        "predict_1000_stones": thousand,
        "reasons_1_stone": explain_one,
    }
    path = write_result("training", result)
    print_table(
        f"Training on {DATA.name} (written to {path})",
        [
            ("held-out MAE", f"${m['mae']:.2f}", "<= $245"),
            ("held-out MAPE", f"{m['mape']:.3f} %", "<= 5.5 %"),
            ("held-out R2", f"{m['r2']:.5f}", ""),
            ("linear baseline MAPE", f"{manifest['metrics']['baseline_linear']['mape']:.3f} %", ""),
            ("training time", f"{train_s:.1f} s", "<= 120 s"),
            ("trees", f"{model.n_trees}", ""),
            ("model file", f"{manifest['sizes']['model.npz'] / 1024:.0f} KiB", ""),
            ("predict 1 stone p50 / p99", f"{one['p50_ms']:.3f} / {one['p99_ms']:.3f} ms", "p50 <= 1 ms"),
            ("predict 1,000 stones p50 / p99", f"{thousand['p50_ms']:.2f} / {thousand['p99_ms']:.2f} ms",
             "<= 20 ms"),
            ("price + reasons 1 stone p50", f"{explain_one['p50_ms']:.3f} ms", ""),
        ],
    )
    return result
