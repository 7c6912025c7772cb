"""Varied, valid stones for the benchmarks: rows of the bundled dataset, never one stone repeated.

Timings taken on one stone repeated a thousand times hide the cost of explanations (every stone
takes the same paths) and of validation; these are the dataset's own accepted rows, in file order.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from gemcast.cleaning import clean_csv
from gemcast.schema import FEATURES

DATA = Path(__file__).resolve().parents[1] / "data" / "diamonds.csv"


@functools.cache
def _accepted() -> tuple[dict[str, Any], ...]:
    rows = clean_csv(DATA.read_bytes(), source=DATA.name).accepted
    return tuple({f: row[f] for f in FEATURES} for row in rows)


def varied_stones(n: int, *, offset: int = 0) -> list[dict[str, Any]]:
    """``n`` valid stones (JSON-ready dicts of the 9 features), cycling through the dataset."""
    rows = _accepted()
    return [dict(rows[(offset + i) % len(rows)]) for i in range(n)]


def csv_lines(stones: list[dict[str, Any]]) -> str:
    """The stones as ``text/csv`` without a header, in FEATURES order."""
    return "".join(",".join(str(s[f]) for f in FEATURES) + "\n" for s in stones)
