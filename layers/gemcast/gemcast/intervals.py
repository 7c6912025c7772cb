"""Calibrated price ranges: split conformal prediction on log price, stone-dependent.

numpy only, like ``gemcast.model``: the serving process, the CLI and the web app compute a
range without scikit-learn.

The method (what a range promises, and why it holds)
----------------------------------------------------
Training keeps back a *calibration slice* of its rows (a hash slice of the training rows,
``training.CALIBRATION_PERCENT``): the model never trains on them. On those rows the score of
a stone is its absolute error in log price, ``|log(price) - log(predicted)|``. The rows are
cut into ``N_BINS`` bins by predicted log price (edges at the calibration rows' own
quantiles), and per bin and per coverage c the range's half-width is the
``ceil((m + 1) c) / m`` empirical quantile of the bin's m scores. A new stone's range is
``predicted * exp(-q) .. predicted * exp(+q)`` with the q of its bin.

This is split conformal prediction made *Mondrian* by the bins: for a new stone exchangeable
with the calibration rows, the range holds its true price with probability at least c,
within each bin and so overall (Vovk et al., "Algorithmic Learning in a Random World";
Lei et al. 2018 for split conformal). It is stone-dependent: a $500 stone and a $12,000 stone
get the widths their own bins earned, not one width for all. On log price the range is
asymmetric in dollars (wider above than below), as price errors are.

The alternative measured beside it (``training.conformalised_quantiles``, Romano et al. 2019,
CQR) fits lower and upper quantile models and conformalises them on the same slice; the
model card and ``make bench`` report both, and the model file stores the chosen one's table
under the metadata key ``intervals``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gemcast.answer import COVERAGES, DEFAULT_COVERAGE
from gemcast.errors import ValidationError

METHOD = "split-conformal-log-mondrian"
N_BINS = 8
MIN_PER_BIN = 40


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The split-conformal quantile: the ceil((m + 1) c)-th smallest of m scores (inf if m too small)."""
    m = scores.size
    k = math.ceil((m + 1) * coverage)
    if m == 0 or k > m:
        return math.inf
    return float(np.partition(scores, k - 1)[k - 1])


def calibrate(
    log_pred: np.ndarray, log_true: np.ndarray, *, coverages: Sequence[int] = COVERAGES, n_bins: int = N_BINS
) -> dict[str, Any]:
    """The interval table (JSON-able, stored in the model file's metadata) from calibration rows."""
    log_pred = np.asarray(log_pred, dtype=np.float64)
    scores = np.abs(np.asarray(log_true, dtype=np.float64) - log_pred)
    n_bins = max(1, min(n_bins, scores.size // MIN_PER_BIN))
    edges = np.quantile(log_pred, np.linspace(0, 1, n_bins + 1)[1:-1]).tolist() if n_bins > 1 else []
    which = np.searchsorted(edges, log_pred, side="right")
    half: dict[str, list[float]] = {}
    for c in coverages:
        qs = [conformal_quantile(scores[which == b], c / 100.0) for b in range(n_bins)]
        # A bin too small for this coverage borrows the whole slice's quantile.
        overall = conformal_quantile(scores, c / 100.0)
        half[str(c)] = [round(q if math.isfinite(q) else overall, 6) for q in qs]
    return {
        "method": METHOD,
        "score": "|log(price) - log(predicted)|",
        "bins_by": "predicted log price",
        "edges": [round(e, 6) for e in edges],
        "half_width": half,
        "coverages": list(coverages),
        "default": DEFAULT_COVERAGE,
        "calibration_rows": int(scores.size),
    }


def has_intervals(metadata: Mapping[str, Any]) -> bool:
    return isinstance(metadata.get("intervals"), Mapping) and metadata["intervals"].get("method") == METHOD


def price_range(table: Mapping[str, Any], log_pred: np.ndarray, coverage: int) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) in dollars for predicted log prices, at ``coverage`` percent."""
    key = str(coverage)
    if key not in table["half_width"]:
        raise ValidationError(
            f"this model has ranges for {table['coverages']} percent, not {coverage}",
            {"coverage": f"must be one of {table['coverages']}"},
        )
    log_pred = np.asarray(log_pred, dtype=np.float64)
    which = np.searchsorted(np.asarray(table["edges"], dtype=np.float64), log_pred, side="right")
    q = np.asarray(table["half_width"][key], dtype=np.float64)[which]
    return np.exp(log_pred - q), np.exp(log_pred + q)


def evaluate(table: Mapping[str, Any], log_pred: np.ndarray, prices: np.ndarray) -> dict[str, dict[str, float]]:
    """Per coverage on rows the model never saw: the share of true prices inside, widths in percent."""
    prices = np.asarray(prices, dtype=np.float64)
    out: dict[str, dict[str, float]] = {}
    for c in table["coverages"]:
        low, high = price_range(table, log_pred, int(c))
        width = (high - low) / np.exp(log_pred) * 100.0
        inside = (prices >= low) & (prices <= high)
        out[str(c)] = {
            "stated": float(c),
            "covered": round(float(inside.mean() * 100.0), 2),
            "median_width_pct": round(float(np.median(width)), 2),
            "p10_width_pct": round(float(np.percentile(width, 10)), 2),
            "p90_width_pct": round(float(np.percentile(width, 90)), 2),
            "n": int(prices.size),
        }
    return out
