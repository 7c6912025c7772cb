"""The training run end to end: load, clean, search, evaluate, package, gate, promote.

The same function runs in the training image (AWS Batch, SageMaker, Vertex AI), from
``gemcast train`` and in the local stack. It reports its progress by stage, with timings.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gemcast import __version__
from gemcast.card import INTERVAL_PLOT_FILE, PLOT_FILE, interval_svg, model_card, pred_vs_actual_svg
from gemcast.cleaning import Cleaner, CleanResult
from gemcast.drift import SUMMARY_FILE, training_summary
from gemcast.errors import DatasetError, IntegrityError, NotFoundError
from gemcast.registry import GateDecision, ModelPackage, Registry, gate, new_version
from gemcast.schema import HOLDOUT_PERCENT
from gemcast.storage import open_storage, read_uri
from gemcast.training import GBM_INPUTS

logger = logging.getLogger("gemcast.train")


class Progress:
    """Prints each stage with its duration; a stage is a ``with`` block."""

    def __init__(self, emit: Callable[[str], None] | None = None) -> None:
        self.emit = emit or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.timings: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.emit(f"[{name}] started")
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - t0
            self.timings[name] = round(seconds, 3)
            self.emit(f"[{name}] done in {seconds:.2f}s")

    def note(self, message: str) -> None:
        self.emit(f"    {message}")


@dataclass
class TrainOutcome:
    version: str
    metrics: dict[str, Any]
    decision: GateDecision
    promoted: bool
    manifest: dict[str, Any]


def load_dataset(data_uri: str) -> CleanResult:
    """Clean one CSV, or every CSV under a folder URI (ending in '/'), as one dataset."""
    cleaner = Cleaner()
    if data_uri.endswith("/"):
        storage = open_storage(data_uri)
        names = [k for k in storage.list("") if k.endswith(".csv")]
        if not names:
            raise DatasetError(f"no CSV files under {data_uri}")
        for name in names:
            cleaner.add_csv(storage.read_bytes(name), source=name)
    else:
        try:
            cleaner.add_csv(read_uri(data_uri), source=data_uri.rsplit("/", 1)[-1])
        except NotFoundError as exc:
            raise DatasetError(f"no data at {data_uri}") from exc
    result = cleaner.finish()
    result.source = data_uri
    return result


def library_versions() -> dict[str, str]:
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "gemcast": __version__,
    }


def run_training(
    data_uri: str,
    registry_uri: str,
    *,
    kind: str = "gbm",
    seed: int = 0,
    budget_s: float = 60.0,
    max_trials: int = 6,
    max_iter: int = 1500,
    gate_metric: str = "mae",
    margin: float = 0.0,
    promote: bool = True,
    progress: Progress | None = None,
    registry: Registry | None = None,
) -> TrainOutcome:
    from gemcast.model import load_model
    from gemcast.training import TrainConfig, export, fit, metrics, split_indices

    progress = progress or Progress()
    registry = registry or Registry(registry_uri)
    config = TrainConfig(kind=kind, seed=seed, budget_s=budget_s, max_trials=max_trials, max_iter=max_iter)

    with progress.stage("loading"):
        progress.note(f"data: {data_uri}")
        clean = load_dataset(data_uri)
    with progress.stage("cleaning"):
        summary = clean.summary()
        progress.note(
            f"{summary['accepted']} rows accepted, {summary['rejected']} rejected: "
            + (", ".join(f"{k} {v}" for k, v in summary["rejected_by_reason"].items()) or "none")
        )
        X_list, y_list = clean.matrix()
        X = np.asarray(X_list, dtype=float)
        prices = np.asarray(y_list, dtype=float)
        train_idx, test_idx = split_indices(clean.accepted)
        if len(train_idx) < 20 or len(test_idx) < 5:
            raise DatasetError(
                f"too few rows to train and score a model: {len(train_idx)} training, {len(test_idx)} held out"
            )
        progress.note(f"split: {len(train_idx)} training rows, {len(test_idx)} held out")
    train_stones = [clean.accepted[i] for i in train_idx]
    with progress.stage("search"):
        trained = fit(X[train_idx], prices[train_idx], train_stones, config, progress.note)
        model_bytes = export(trained)
        model = load_model(model_bytes)
    with progress.stage("evaluation"):
        X_test, y_test = X[test_idx], prices[test_idx]
        predicted = model.predict(X_test)
        holdout = metrics(y_test, predicted)
        # The file we ship must predict what scikit-learn predicts.
        reference = np.exp(sum(w * est.predict(_design(kind, X_test)) for est, w in trained.estimators))
        drift = float(np.max(np.abs(predicted / reference - 1.0)))
        if drift > 1e-6:
            raise IntegrityError(f"exported model differs from scikit-learn by {drift:.2e} (relative)")
        baseline = None
        if kind != "linear":
            base = fit(X[train_idx], prices[train_idx], train_stones, TrainConfig(kind="linear", seed=seed))
            baseline = metrics(y_test, load_model(export(base)).predict(X_test))
        champion_metrics = None
        champion_version = None
        pointer = registry.champion()
        if pointer is not None:
            champion = registry.load(pointer["version"])
            champion_version = champion.version
            champion_metrics = metrics(y_test, champion.model.predict(X_test))
        progress.note(f"held out: MAE ${holdout['mae']:.2f}, MAPE {holdout['mape']:.3f} %, R2 {holdout['r2']:.4f}")
        ranges = _range_metrics(model, predicted, y_test)
        for c, r in (ranges or {}).items():
            progress.note(f"{c} % range: {r['covered']:.1f} % of held-out prices inside, "
                          f"median width {r['median_width_pct']:.1f} %")
        if baseline:
            progress.note(f"linear baseline: MAE ${baseline['mae']:.2f}, MAPE {baseline['mape']:.3f} %")
        if champion_metrics:
            progress.note(
                f"champion {champion_version} on the same rows: MAE ${champion_metrics['mae']:.2f}, "
                f"MAPE {champion_metrics['mape']:.3f} %"
            )
    with progress.stage("gate"):
        decision = gate(holdout, champion_metrics, metric=gate_metric, margin=margin)
        progress.note(("PASS: " if decision.promote else "FAIL: ") + decision.reason)
    with progress.stage("package"):
        now = datetime.now(UTC)
        version = new_version(now)
        carats = X[:, 0]
        manifest: dict[str, Any] = {
            "version": version,
            "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": {
                "uri": data_uri,
                "snapshot_id": summary["snapshot_id"],
                "rows": summary["rows"],
                "accepted": summary["accepted"],
                "rejected": summary["rejected"],
                "rejected_by_reason": summary["rejected_by_reason"],
                "train_rows": int(len(train_idx)),
                "holdout_rows": int(len(test_idx)),
                "holdout_percent": HOLDOUT_PERCENT,
                "carat_range": f"{carats.min():g} to {carats.max():g}",
            },
            "metrics": {
                "holdout": holdout,
                "baseline_linear": baseline,
                "champion_on_same_rows": champion_metrics,
                "champion_version": champion_version,
                "ranges": ranges,
            },
            "model": {
                "kind": trained.kind,
                "file": "model.npz",
                "params": trained.params,
                "seed": seed,
                "search": trained.search,
                "fit_seconds": round(trained.fit_seconds, 3),
                "metadata": model.metadata,
            },
            "gate": decision.as_dict(),
            "libraries": library_versions(),
            "timings": dict(progress.timings),
        }
        files = {
            "model.npz": model_bytes,
            "metrics.json": (json.dumps(manifest["metrics"], indent=2) + "\n").encode(),
            PLOT_FILE: pred_vs_actual_svg(y_test.tolist(), predicted.tolist()).encode(),
            "model_card.md": model_card(manifest).encode(),
            # What drift monitoring compares the request log with (gemcast.drift).
            SUMMARY_FILE: json.dumps(training_summary(train_stones, predicted.tolist(), version=version,
                                                      snapshot_id=str(summary["snapshot_id"]))).encode(),
        }
        if ranges:
            files[INTERVAL_PLOT_FILE] = interval_svg(ranges).encode()
        if clean.rejected:
            files["rejected.jsonl"] = clean.rejected_jsonl().encode()
        registry.publish(ModelPackage(files, manifest))
        progress.note(f"published {registry.uri.rstrip('/')}/{version}/")
    promoted = False
    if decision.promote and promote:
        with progress.stage("promote"):
            registry.promote(version, reason=decision.reason)
            promoted = True
            progress.note(f"{version} is the champion")
    return TrainOutcome(version, holdout, decision, promoted, manifest)


def _range_metrics(model: Any, predicted: np.ndarray, prices: np.ndarray) -> dict[str, Any] | None:
    """Per stated coverage, on the held-out rows: the share of true prices inside, median width."""
    from gemcast import intervals

    table = model.metadata.get("intervals")
    return intervals.evaluate(table, np.log(predicted), prices) if table else None


def _design(kind: str, X: np.ndarray) -> np.ndarray:
    """What the scikit-learn estimator was fitted on, from the raw features."""
    from gemcast.model import linear_design, model_inputs

    if kind == "linear":
        return linear_design(X)
    return model_inputs(X, GBM_INPUTS)
