"""What if: the same stone one grade up or down, or at the next carat milestone.

For each stone, the model prices its neighbours a buyer weighs against it: color, clarity
and cut one grade better and one grade worse (where such a grade exists), and, when the
stone is just under a carat milestone (``MILESTONES``, within ``JUST_UNDER`` of it), the same
stone at that milestone. A heavier stone of the same proportions is bigger in every
direction by the cube root of the weight ratio, so x, y and z are scaled by it; depth %
and table % stay as they are. All neighbours of all stones are priced in one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gemcast.schema import CATEGORIES, FEATURES

MILESTONES = (0.5, 0.75, 1.0, 1.5, 2.0)
JUST_UNDER = 0.10  # a stone within 10 % under a milestone is "just under" it
GRADES = ("color", "clarity", "cut")
_CARAT, _X, _Y, _Z = (FEATURES.index(f) for f in ("carat", "x", "y", "z"))


def next_milestone(carat: float) -> float | None:
    """The milestone this weight is just under, or None."""
    for m in MILESTONES:
        if m * (1.0 - JUST_UNDER) <= carat < m:
            return m
    return None


def variants(row: np.ndarray) -> list[tuple[dict[str, Any], np.ndarray]]:
    """(description, encoded row) of every neighbour of one encoded stone."""
    out: list[tuple[dict[str, Any], np.ndarray]] = []
    for feature in GRADES:
        j = FEATURES.index(feature)
        levels = CATEGORIES[feature]
        code = int(row[j])
        for step, direction in ((1, "up"), (-1, "down")):
            new = code + step
            if 0 <= new < len(levels):
                changed = row.copy()
                changed[j] = new
                out.append(({"change": feature, "direction": direction, "from": levels[code], "to": levels[new]},
                            changed))
    milestone = next_milestone(float(row[_CARAT]))
    if milestone is not None:
        changed = row.copy()
        scale = (milestone / row[_CARAT]) ** (1.0 / 3.0)
        changed[_CARAT] = milestone
        changed[[_X, _Y, _Z]] = np.round(row[[_X, _Y, _Z]] * scale, 2)
        out.append(({"change": "carat", "direction": "up", "from": round(float(row[_CARAT]), 3), "to": milestone},
                    changed))
    return out


def what_if(model: Any, X: np.ndarray, prices: Sequence[float]) -> list[list[dict[str, Any]]]:
    """Per stone its neighbours: ``{"change", "direction", "from", "to", "price", "delta_usd"}``."""
    X = np.asarray(X, dtype=np.float64)
    per_stone = [variants(row) for row in X]
    rows = [r for vs in per_stone for _, r in vs]
    if not rows:
        return [[] for _ in per_stone]
    priced = iter(model.predict(np.asarray(rows)).tolist())
    out: list[list[dict[str, Any]]] = []
    for vs, base in zip(per_stone, prices, strict=True):
        entries = []
        for desc, _ in vs:
            price = float(next(priced))
            entries.append({**desc, "price": round(price, 2), "delta_usd": round(price - float(base), 2)})
        out.append(entries)
    return out
