"""Stones and prediction-log records for the drift tests: the bundled data, as logged."""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

from gemcast.api import log_record
from gemcast.cleaning import Cleaner
from gemcast.drift import training_summary
from gemcast.schema import FEATURES

REPO = Path(__file__).resolve().parents[1]
VERSION = "20240501T000000000Z-abc123"


@functools.cache
def diamonds() -> tuple[dict[str, Any], ...]:
    cleaner = Cleaner()
    cleaner.add_csv((REPO / "data" / "diamonds.csv").read_bytes(), source="diamonds.csv")
    return tuple(cleaner.finish().accepted)


def summary() -> dict[str, Any]:
    """The summary training writes, with the rows' own prices standing in for predictions."""
    rows = diamonds()
    return training_summary(rows, [float(r["price"]) for r in rows], version=VERSION)


def like_training(n: int, seed: int = 1) -> list[dict[str, Any]]:
    return random.Random(seed).sample(list(diamonds()), n)


def over_two_carats(n: int, seed: int = 2) -> list[dict[str, Any]]:
    big = [r for r in diamonds() if r["carat"] > 2.0]
    rng = random.Random(seed)
    return [rng.choice(big) for _ in range(n)]


def records(rows: list[dict[str, Any]], *, per_request: int = 5, start: float = 1714521600.0,
            step_s: float = 60.0) -> list[dict[str, Any]]:
    """Prediction log records as the API writes them: a few stones a request, priced."""
    out = []
    for i in range(0, len(rows), per_request):
        chunk = rows[i:i + per_request]
        stones = [{f: r[f] for f in FEATURES} for r in chunk]
        single = len(stones) == 1
        response: dict[str, Any] = {"model_version": VERSION, "request_id": f"req-{i}"}
        if single:
            response["price"] = float(chunk[0]["price"])
        else:
            response["predictions"] = [{"price": float(r["price"])} for r in chunk]
        out.append(log_record(request_id=f"req-{i}", caller="user-1", route="POST /v1/predictions",
                              request=stones[0] if single else stones, response=response, status=200,
                              model_version=VERSION, latency_ms=4.2, now=start + (i // per_request) * step_s))
    return out
