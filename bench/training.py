"""Training benchmark: the default model on diamonds_large.csv, its held-out scores, ranges and speed.

Ranges: the shipped split-conformal ranges (from the manifest, held-out rows) beside
conformalised quantile regression (CQR) fitted on the same rows and calibrated on the same
slice, so the choice between them can be read off one table. Speed is measured on 300 varied
stones one at a time (one stone repeated hides the cost of the explanation).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import print_table, time_calls, write_result
from gemcast.pipeline import Progress, load_dataset, run_training
from gemcast.predict import Predictor, PriceOptions
from gemcast.registry import Registry
from gemcast.schema import CATEGORIES, EXAMPLE_STONE, encode

DATA = Path(__file__).resolve().parents[1] / "data" / "diamonds_large.csv"


def varied_stones(n: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """Round stones of every size and grade, measurements consistent with their weight."""
    rng = np.random.default_rng(seed)
    stones = []
    for _ in range(n):
        carat = float(rng.uniform(0.25, 2.5))
        diameter = 6.45 * carat ** (1 / 3)
        stones.append({**EXAMPLE_STONE, "carat": round(carat, 2), "x": round(diameter, 2),
                       "y": round(diameter * 1.005, 2), "z": round(diameter * 0.617, 2),
                       **{k: str(rng.choice(v)) for k, v in CATEGORIES.items()}})
    return stones


def per_stone_ms(predictor: Predictor, stones: list[dict[str, Any]], **options: Any) -> dict[str, float]:
    chosen = PriceOptions(**options)
    for s in stones[:10]:
        predictor.price([s], chosen)
    samples = []
    for s in stones:
        t0 = time.perf_counter()
        predictor.price([s], chosen)
        samples.append((time.perf_counter() - t0) * 1000.0)
    return {"p50_ms": round(float(np.median(samples)), 4), "p90_ms": round(float(np.percentile(samples, 90)), 4),
            "n": len(samples)}


def cqr_ranges(coverages: tuple[int, ...] = (50, 80, 95)) -> dict[str, dict[str, float]]:
    """CQR on the project's split: quantile models on the fit rows, conformalised on the calibration slice."""
    from gemcast.training import calibration_mask, conformalised_quantiles, split_indices

    clean = load_dataset(str(DATA))
    X_list, y_list = clean.matrix()
    X, y = np.asarray(X_list, dtype=float), np.asarray(y_list, dtype=float)
    train, test = split_indices(clean.accepted)
    cal = calibration_mask([clean.accepted[i] for i in train])
    fit_rows, cal_rows = train[~cal], train[cal]
    ranges = conformalised_quantiles(X[fit_rows], y[fit_rows], X[cal_rows], y[cal_rows], X[test], coverages)
    out = {}
    for c, (low, high) in ranges.items():
        mid = np.sqrt(low * high)
        out[c] = {"stated": float(c), "covered": round(float(((y[test] >= low) & (y[test] <= high)).mean() * 100), 2),
                  "median_width_pct": round(float(np.median((high - low) / mid * 100)), 2)}
    return out


def run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        uri = (Path(tmp) / "models").as_uri()
        # The machine is shared: the load beside the time says how far the time is to be trusted.
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        outcome = run_training(str(DATA), uri, progress=Progress(lambda _m: None))
        train_s = time.perf_counter() - t0
        load_after = os.getloadavg()[0]
        registry = Registry(uri)
        manifest = registry.manifest(outcome.version)
        loaded = registry.load(outcome.version)
    model = loaded.model
    stone = np.array([encode(EXAMPLE_STONE)])
    stones = varied_stones()
    batch = np.asarray([encode(s) for s in varied_stones(1000, seed=1)])
    predictor = Predictor(model, loaded.version)
    one = time_calls(lambda: model.predict(stone), repeat=2000)
    thousand = time_calls(lambda: model.predict(batch), repeat=50)
    answer_one = per_stone_ms(predictor, stones)
    answer_what_if = per_stone_ms(predictor, stones, what_if=True)
    prices_only = per_stone_ms(predictor, stones, reasons=False)
    t0 = time.perf_counter()
    cqr = cqr_ranges()
    cqr_s = time.perf_counter() - t0
    m = outcome.metrics
    ranges = manifest["metrics"]["ranges"] or {}
    result = {
        "data": str(DATA.name),
        "version": outcome.version,
        "metrics": m,
        "ranges": ranges,
        "ranges_cqr": cqr,
        "cqr_seconds": round(cqr_s, 1),
        "baseline_linear": manifest["metrics"]["baseline_linear"],
        "training_seconds": round(train_s, 2),
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "fit_seconds": manifest["model"].get("fit_seconds"),
        "stage_seconds": manifest["timings"],
        "params": manifest["model"]["params"],
        "n_trees": model.n_trees,
        "max_depth": model.max_depth,
        "model_file_bytes": manifest["sizes"]["model.npz"],
        "predict_1_stone": one,
        "predict_1000_stones": thousand,
        "answer_1_stone_prices_only": prices_only,
        "answer_1_stone": answer_one,
        "answer_1_stone_what_if": answer_what_if,
    }
    path = write_result("training", result)
    rows = [
        ("held-out MAE", f"${m['mae']:.2f}", "<= $245"),
        ("held-out MAPE", f"{m['mape']:.3f} %", "<= 5.45 %"),
        ("held-out R2", f"{m['r2']:.5f}", ""),
        ("linear baseline MAPE", f"{manifest['metrics']['baseline_linear']['mape']:.3f} %", ""),
        ("training time", f"{train_s:.1f} s", "<= 120 s"),
        ("load average before / after (2 cores)", f"{load_before:.1f} / {load_after:.1f}", ""),
        ("trees / deepest", f"{model.n_trees} / {model.max_depth}", ""),
        ("model file", f"{manifest['sizes']['model.npz'] / 1024:.0f} KiB", ""),
        ("predict 1 stone p50 / p99", f"{one['p50_ms']:.3f} / {one['p99_ms']:.3f} ms", "p50 <= 1 ms"),
        ("predict 1,000 stones p50 / p99", f"{thousand['p50_ms']:.2f} / {thousand['p99_ms']:.2f} ms", "<= 20 ms"),
        ("1 stone, price + range (varied) p50", f"{prices_only['p50_ms']:.3f} ms", ""),
        ("1 stone, + reasons (varied) p50 / p90", f"{answer_one['p50_ms']:.3f} / {answer_one['p90_ms']:.3f} ms",
         "<= 1.5 ms"),
        ("1 stone, + what-if (varied) p50", f"{answer_what_if['p50_ms']:.3f} ms", ""),
    ]
    for c, r in ranges.items():
        alt = cqr.get(c)
        alt_text = f"; CQR {alt['covered']:.1f} % inside, {alt['median_width_pct']:.1f} % wide" if alt else ""
        rows.append((f"{c} % range: held-out inside, median width",
                     f"{r['covered']:.1f} %, {r['median_width_pct']:.1f} %", f"within 2 points of {c} %{alt_text}"))
    print_table(f"Training on {DATA.name} (written to {path})", rows)
    return result
