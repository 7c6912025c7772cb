"""Side by side: gemcast's model against a tuned XGBoost, same data, same split, same budget.

XGBoost gets what people give it: log(price) as target, the nine features (grades as ordinal
codes), a seeded random search of 16 candidates (depth, learning rate, subsampling, column
sampling, child weight, L2) with early stopping on the same validation slice of the training
rows that gemcast's search uses, then a refit on every training row. Both are scored on the
same held-out stones (the hash split).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, print_table, time_calls, write_result
from gemcast import intervals
from gemcast.pipeline import load_dataset
from gemcast.training import _validation_mask, calibration_mask, metrics, split_indices

DATA = Path(__file__).resolve().parents[1] / "data" / "diamonds_large.csv"
TRIALS = 16


def tuned_xgboost(X: np.ndarray, y: np.ndarray, val: np.ndarray, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    best: tuple[float, dict[str, Any], int] | None = None
    for _ in range(TRIALS):
        params = {
            "max_depth": int(rng.choice([4, 5, 6, 7, 8])),
            "learning_rate": float(rng.choice([0.02, 0.05, 0.1])),
            "subsample": float(rng.choice([0.7, 0.85, 1.0])),
            "colsample_bytree": float(rng.choice([0.6, 0.8, 1.0])),
            "min_child_weight": float(rng.choice([1, 3, 10])),
            "reg_lambda": float(rng.choice([0.5, 1, 5])),
        }
        model = xgb.XGBRegressor(n_estimators=4000, early_stopping_rounds=100, tree_method="hist", n_jobs=2,
                                 random_state=seed, **params)
        model.fit(X[~val], np.log(y[~val]), eval_set=[(X[val], np.log(y[val]))], verbose=False)
        mae = float(np.mean(np.abs(np.exp(model.predict(X[val])) - y[val])))
        if best is None or mae < best[0]:
            best = (mae, params, int(model.best_iteration))
    assert best is not None
    _, params, n_iter = best
    final = xgb.XGBRegressor(n_estimators=int(n_iter * 1.1) + 1, tree_method="hist", n_jobs=2, random_state=seed,
                             **params).fit(X, np.log(y))
    return final, {**params, "n_estimators": int(n_iter * 1.1) + 1}


def run() -> dict[str, Any]:
    clean = load_dataset(str(DATA))
    X_list, y_list = clean.matrix()
    X, y = np.asarray(X_list, dtype=float), np.asarray(y_list, dtype=float)
    train_idx, test_idx = split_indices(clean.accepted)
    cal = calibration_mask([clean.accepted[i] for i in train_idx])
    fit_idx, cal_idx = train_idx[~cal], train_idx[cal]
    val = _validation_mask([clean.accepted[i] for i in fit_idx])
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    model, params = tuned_xgboost(X[fit_idx], y[fit_idx], val)
    xgb_seconds = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    log_test = model.predict(X[test_idx]).astype(float)
    xgb_metrics = metrics(y[test_idx], np.exp(log_test))
    table = intervals.calibrate(model.predict(X[cal_idx]).astype(float), np.log(y[cal_idx]))
    xgb_ranges = intervals.evaluate(table, log_test, y[test_idx])
    one = X[test_idx[:1]]
    xgb_one = time_calls(lambda: model.predict(one), repeat=300)
    booster = model.get_booster()
    import xgboost as xgb

    dmatrix = xgb.DMatrix(one)
    xgb_shap = time_calls(lambda: booster.predict(dmatrix, pred_contribs=True), repeat=300)
    ours_file = RESULTS / "training.json"
    if not ours_file.is_file():
        from bench import training

        training.run()
    ours = json.loads(ours_file.read_text())
    result = {"xgboost": {"metrics": xgb_metrics, "params": params, "seconds": round(xgb_seconds, 1),
                          "load_average": [round(load_before, 2), round(load_after, 2)],
                          "ranges": xgb_ranges, "predict_1_stone": xgb_one, "shap_1_stone": xgb_shap},
              "gemcast": {"metrics": ours["metrics"], "seconds": ours["training_seconds"], "version": ours["version"],
                          "load_average": ours.get("load_average"), "ranges": ours.get("ranges"),
                          "answer_1_stone": ours.get("answer_1_stone")}}
    write_result("compare", result)
    g = ours["metrics"]
    rows = [
        ("MAE   gemcast / XGBoost", f"${g['mae']:.2f} / ${xgb_metrics['mae']:.2f}", "lower is better"),
        ("MAPE  gemcast / XGBoost", f"{g['mape']:.3f} % / {xgb_metrics['mape']:.3f} %", ""),
        ("RMSE  gemcast / XGBoost", f"${g['rmse']:.2f} / ${xgb_metrics['rmse']:.2f}", ""),
        ("training seconds gemcast / XGBoost", f"{ours['training_seconds']:.1f} / {xgb_seconds:.1f}",
         "gemcast: the whole run_training"),
        ("load average gemcast / XGBoost (2 cores)",
         f"{(ours.get('load_average') or ['?'])[-1]} / {load_after:.1f}", "a shared machine: times under load"),
    ]
    for c, r in (ours.get("ranges") or {}).items():
        x = xgb_ranges.get(c)
        if x:
            rows.append((f"{c} % range inside  gemcast / XGBoost", f"{r['covered']:.1f} % / {x['covered']:.1f} %",
                         f"stated {c} %"))
            rows.append((f"{c} % range median width  gemcast / XGBoost",
                         f"{r['median_width_pct']:.1f} % / {x['median_width_pct']:.1f} %", "narrower is better"))
    if ours.get("answer_1_stone"):
        rows.append(("1 stone price + reasons p50  gemcast (+ range) / XGBoost (pred_contribs)",
                     f"{ours['answer_1_stone']['p50_ms']:.3f} / {xgb_shap['p50_ms']:.3f} ms", ""))
    print_table(
        f"gemcast against a tuned XGBoost, same split of {DATA.name} ({xgb_metrics['n']} held-out stones)", rows)
    return result
