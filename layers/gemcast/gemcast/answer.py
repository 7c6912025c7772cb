"""What a priced stone carries beside its price: the range, the grouped reasons, the what-if table.

``Predictor.price`` calls :func:`extras` once per batch; the request parameters that steer
it (``coverage``, ``what_if``) are fields of ``predict.PriceOptions``, read in one place
(``predict.parse_options``); :func:`check_coverage` is how a coverage is read. A model file without an interval table
(written before ranges existed, or trained on too few rows to calibrate one) answers prices
without a range. numpy-free at import: the Lambda proxy reads the parameters with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gemcast.errors import ValidationError

COVERAGES: tuple[int, ...] = (50, 80, 90, 95)  # percent; what a caller may ask for
DEFAULT_COVERAGE = 80


def check_coverage(value: Any) -> int:
    """The requested coverage in percent (50, 80, 90 or 95); ValidationError naming ``coverage``."""
    if value is None:
        return DEFAULT_COVERAGE
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    # 0.8 means 80 %: both spellings are common.
    percent = (value * 100 if 0 < value < 1 else value) if number else None
    for c in COVERAGES:
        if percent is not None and abs(percent - c) < 1e-9:
            return c
    raise ValidationError(
        f"coverage must be one of {', '.join(map(str, COVERAGES))} (percent), got {value!r}",
        {"coverage": f"must be one of {list(COVERAGES)}, got {value!r}"},
    )


def extras(
    model: Any,
    X: Any,
    prices: Any,
    explained: Sequence[Mapping[str, Any]] | None,
    *,
    coverage: int = DEFAULT_COVERAGE,
    what_if: bool = False,
) -> list[dict[str, Any]]:
    """Per valid stone the fields to add to its answer: ``price_range``, ``reason_groups``, ``what_if``."""
    import numpy as np

    from gemcast import intervals, reasons, whatif
    from gemcast.schema import CATEGORIES, FEATURES

    n = len(prices)
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    table = model.metadata.get("intervals")
    if table:
        percent = check_coverage(coverage)
        low, high = intervals.price_range(table, np.log(prices), percent)
        for entry, lo, hi in zip(out, low.tolist(), high.tolist(), strict=True):
            entry["price_range"] = {"low": round(lo, 2), "high": round(hi, 2), "coverage": percent}
    if explained is not None:
        # The stones as people read them (grades by name), for the reasons' meanings.
        stones = [{f: CATEGORIES[f][int(v)] if f in CATEGORIES else v for f, v in zip(FEATURES, row, strict=True)}
                  for row in np.asarray(X, dtype=float).tolist()]
        typical = model.metadata.get("typical_stone")
        for j, entry in enumerate(out):
            entry["reason_groups"] = [
                {**g, "effect_usd": round(g["effect_usd"], 2), "effect_pct": round(g["effect_pct"], 2)}
                for g in reasons.grouped(explained[j]["reasons"], stones[j], typical)
            ]
    if what_if:
        for entry, table_j in zip(out, whatif.what_if(model, X, prices), strict=True):
            entry["what_if"] = table_j
    return out
