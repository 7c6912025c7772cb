"""The diamond schema: features, category orders, plausible ranges, and stone validation.

Validation is shared by the dataset cleaner, the prediction API (AWS and GCP), the serving
process and the web app, so that a stone means the same thing everywhere. Validating one
stone reports every problem at once, by field, in words a person understands.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FEATURES: tuple[str, ...] = ("carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z")
TARGET = "price"
COLUMNS: tuple[str, ...] = ("carat", "cut", "color", "clarity", "depth", "table", "price", "x", "y", "z")
NUMERIC: tuple[str, ...] = ("carat", "depth", "table", "x", "y", "z")

# Worst to best (ggplot2 order); the ordinal code of a grade is its index here.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "cut": ("Fair", "Good", "Very Good", "Premium", "Ideal"),
    "color": ("J", "I", "H", "G", "F", "E", "D"),
    "clarity": ("I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"),
}

CATEGORY_MEANINGS: dict[str, dict[str, str]] = {
    "cut": {
        "Fair": "Fair: the lowest cut grade",
        "Good": "Good",
        "Very Good": "Very Good",
        "Premium": "Premium",
        "Ideal": "Ideal: the best cut grade",
    },
    "color": {
        "J": "J: faint yellow, the lowest grade here",
        "I": "I: near colorless, slightly tinted",
        "H": "H: near colorless",
        "G": "G: near colorless",
        "F": "F: colorless",
        "E": "E: colorless",
        "D": "D: colorless, the best grade",
    },
    "clarity": {
        "I1": "I1: included, the lowest grade",
        "SI2": "SI2: slightly included (2)",
        "SI1": "SI1: slightly included (1)",
        "VS2": "VS2: very slightly included (2)",
        "VS1": "VS1: very slightly included (1)",
        "VVS2": "VVS2: very, very slightly included (2)",
        "VVS1": "VVS1: very, very slightly included (1)",
        "IF": "IF: internally flawless, the best grade",
    },
}

# Inputs a model may derive from the features (computed in gemcast.model, which imports numpy);
# named here too so that numpy-free code (the API's OpenAPI document) knows every reason name.
DERIVED_INPUT_NAMES: tuple[str, ...] = ("x/y", "carat/xyz", "xyz", "(x+y)/2", "spread", "depth_gap")

UNITS: dict[str, str] = {
    "carat": "ct",
    "depth": "%",
    "table": "%",
    "x": "mm",
    "y": "mm",
    "z": "mm",
    "price": "USD",
}

DESCRIPTIONS: dict[str, str] = {
    "carat": "weight in carats",
    "cut": "cut grade",
    "color": "color grade, D (best) to J",
    "clarity": "clarity grade, IF (best) to I1",
    "depth": "total depth: z / mean(x, y), in percent",
    "table": "width of the top facet relative to the widest point, in percent",
    "x": "length in mm",
    "y": "width in mm",
    "z": "depth in mm",
    "price": "price in US dollars",
}

# Plausible closed ranges. A dimension must also be > 0, so its lower bound is exclusive.
RANGES: dict[str, tuple[float, float]] = {
    "carat": (0.1, 6.0),
    "depth": (40.0, 80.0),
    "table": (40.0, 80.0),
    "x": (0.0, 15.0),
    "y": (0.0, 15.0),
    "z": (0.0, 15.0),
}
EXCLUSIVE_LOW = frozenset({"x", "y", "z"})

# Physical consistency of a round brilliant.
DEPTH_TOLERANCE = 5.0  # percentage points between stated depth and 2*z/(x+y)
DENSITY_RANGE = (0.0045, 0.0085)  # carats per mm^3 of the x*y*z box (diamond: ~0.006)
ROUNDNESS_RANGE = (0.8, 1.25)  # x / y
MAX_PRICE = 10_000_000.0

HOLDOUT_PERCENT = 20

# A typical stone (0.7 ct Ideal E VS1): the example of the API document, the demo's curl line
# and the tests.
EXAMPLE_STONE: dict[str, Any] = {
    "carat": 0.7,
    "cut": "Ideal",
    "color": "E",
    "clarity": "VS1",
    "depth": 61.8,
    "table": 56.0,
    "x": 5.7,
    "y": 5.72,
    "z": 3.53,
}


@dataclass(frozen=True)
class Problem:
    """One reason a stone or row is invalid."""

    field: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


def _fmt(value: float) -> str:
    return f"{value:g}"


def _parse_number(field: str, raw: Any, problems: list[Problem]) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        problems.append(Problem(field, "is missing"))
        return None
    if isinstance(raw, bool):
        problems.append(Problem(field, f"must be a number, got {raw!r}"))
        return None
    if not isinstance(raw, int | float | str):
        problems.append(Problem(field, f"must be a number, got {type(raw).__name__}"))
        return None
    value = as_finite(raw)
    if value is None:
        if isinstance(raw, str) and not _looks_numeric(raw):
            problems.append(Problem(field, f"must be a number, got {_short(raw)}"))
        else:
            problems.append(Problem(field, f"must be a finite number of ordinary size, got {_short(raw)}"))
        return None
    return value


def as_finite(raw: Any) -> float | None:
    """``raw`` (a number, or a number written as text) as a finite float, or None.

    The one door every number of a stone or a row goes through: NaN, infinities, integers too
    large for a float (``10**400`` raises OverflowError in ``float()``) and text that is no
    number all come out as None, so no caller ever computes with them.
    """
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (ValueError, OverflowError, TypeError):
        return None
    return value if math.isfinite(value) else None


def _looks_numeric(text: str) -> bool:
    body = text.strip().lstrip("+-").replace(".", "", 1).replace("_", "")
    mantissa = body.lower().split("e", 1)[0]
    return mantissa.isdigit() or body.lower() in {"inf", "infinity", "nan"}


def _short(raw: Any, limit: int = 40) -> str:
    """A value as it may appear in a message: long numbers and text cut to a few characters."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw.bit_length() > 128:
        return f"an integer of about {int(raw.bit_length() * 0.30103) + 1} digits"
    text = repr(raw)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quotient(numerator: float, denominator: float) -> float | None:
    """numerator / denominator when it is a finite number; None when it under- or overflows.

    Measurements that are each in range can still multiply to 0 (1e-200 mm cubed) or divide to
    infinity: such a stone is refused with a reason, never a ZeroDivisionError.
    """
    if denominator == 0.0 or not math.isfinite(denominator):
        return None
    try:
        value = numerator / denominator
    except (OverflowError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def _check_range(field: str, value: float, problems: list[Problem]) -> bool:
    low, high = RANGES[field]
    unit = UNITS.get(field, "")
    if field in EXCLUSIVE_LOW:
        if value <= low:
            problems.append(Problem(field, f"must be greater than 0 {unit}, got {_fmt(value)}".strip()))
            return False
    elif value < low:
        problems.append(Problem(field, f"must be at least {_fmt(low)} {unit}, got {_fmt(value)}"))
        return False
    if value > high:
        problems.append(Problem(field, f"must be at most {_fmt(high)} {unit}, got {_fmt(value)}"))
        return False
    return True


def _parse_category(field: str, raw: Any, problems: list[Problem]) -> str | None:
    allowed = CATEGORIES[field]
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        problems.append(Problem(field, "is missing"))
        return None
    if not isinstance(raw, str):
        problems.append(Problem(field, f"must be one of {', '.join(allowed)}; got {_short(raw)}"))
        return None
    value = raw.strip()
    if value in allowed:
        return value
    # Accept a grade in another letter case ("ideal", "vs1"), never a different grade.
    for grade in allowed:
        if grade.lower() == value.lower():
            return grade
    problems.append(Problem(field, f"unknown {field} {_short(raw)}: must be one of {', '.join(allowed)}"))
    return None


def check_stone(raw: Mapping[str, Any], *, with_price: bool = False) -> tuple[dict[str, Any], list[Problem]]:
    """Parse and check one stone; return (typed values, problems).

    Every problem is reported at once: types, ranges, categories, then the physical
    consistency of the measurements (only between fields that are themselves valid).
    """
    if isinstance(raw, list | tuple) and not with_price:  # Vertex's instance form: values in FEATURES order
        if len(raw) != len(FEATURES):
            return {}, [Problem("stone", f"a stone given as a list must hold the {len(FEATURES)} values "
                                         f"{', '.join(FEATURES)} in that order; got {len(raw)}")]
        raw = dict(zip(FEATURES, raw, strict=True))
    if not isinstance(raw, Mapping):
        return {}, [Problem("stone", f"must be an object with the fields {', '.join(FEATURES)}")]
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    names = FEATURES + ((TARGET,) if with_price else ())
    for field in names:
        if field in CATEGORIES:
            grade = _parse_category(field, raw.get(field), problems)
            if grade is not None:
                values[field] = grade
            continue
        number = _parse_number(field, raw.get(field), problems)
        if number is None:
            continue
        if field == TARGET:
            if number <= 0:
                problems.append(Problem(field, f"must be greater than 0 USD, got {_fmt(number)}"))
                continue
            if number > MAX_PRICE:
                problems.append(Problem(field, f"must be at most {_fmt(MAX_PRICE)} USD, got {_fmt(number)}"))
                continue
        elif not _check_range(field, number, problems):
            continue
        values[field] = number
    problems.extend(_consistency(values))
    return values, problems


def plainly_valid(carat: Any, depth: Any, table: Any, x: Any, y: Any, z: Any) -> Any:
    """Whether measurements pass every numeric rule of ``check_stone`` (ranges, roundness,
    depth, density): for plain floats a bool, for numpy arrays a mask, by the same expressions.

    The fast path of the batch checks (``gemcast.predict.validate_batch`` on columns, the
    dataset cleaner on each row), which only ever accept with it: a stone it does not pass goes
    to ``check_stone``, which decides and words the reasons. A NaN or an infinity fails some
    comparison here, so no separate finiteness test is needed. With floats, a zero divisor
    raises ZeroDivisionError (a caller treats that as not plain); numpy callers silence
    its warnings (``np.errstate``).
    """
    ok = True
    for name, value in (("carat", carat), ("depth", depth), ("table", table), ("x", x), ("y", y), ("z", z)):
        low, high = RANGES[name]
        ok = ok & ((value > low) if name in EXCLUSIVE_LOW else (value >= low)) & (value <= high)
    ratio = x / y
    implied = 200.0 * z / (x + y)
    density = carat / (x * y * z)
    return (ok & (ratio >= ROUNDNESS_RANGE[0]) & (ratio <= ROUNDNESS_RANGE[1])
            & (abs(depth - implied) <= DEPTH_TOLERANCE)
            & (density >= DENSITY_RANGE[0]) & (density <= DENSITY_RANGE[1]))


def _consistency(v: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    if all(k in v for k in ("x", "y")):
        ratio = _quotient(v["x"], v["y"])
        if ratio is None or not ROUNDNESS_RANGE[0] <= ratio <= ROUNDNESS_RANGE[1]:
            problems.append(
                Problem("y", f"x = {_fmt(v['x'])} mm and y = {_fmt(v['y'])} mm differ too much for a round stone")
            )
    if all(k in v for k in ("x", "y", "z", "depth")):
        implied = _quotient(200.0 * v["z"], v["x"] + v["y"])
        if implied is None or abs(v["depth"] - implied) > DEPTH_TOLERANCE:
            shown = "no number" if implied is None else f"{implied:.1f} %"
            problems.append(
                Problem(
                    "depth",
                    f"depth {_fmt(v['depth'])} % contradicts the measurements: 2*z/(x+y) gives {shown}",
                )
            )
    if all(k in v for k in ("x", "y", "z", "carat")):
        density = _quotient(v["carat"], v["x"] * v["y"] * v["z"])
        if density is None or not DENSITY_RANGE[0] <= density <= DENSITY_RANGE[1]:
            problems.append(
                Problem(
                    "carat",
                    f"{_fmt(v['carat'])} ct is impossible for a stone of {_fmt(v['x'])} x {_fmt(v['y'])} x "
                    f"{_fmt(v['z'])} mm",
                )
            )
    return problems


def encode(stone: Mapping[str, Any]) -> list[float]:
    """The model's input row: features in FEATURES order, grades as ordinal codes."""
    return [
        float(CATEGORIES[f].index(stone[f])) if f in CATEGORIES else float(stone[f])
        for f in FEATURES
    ]


def canonical_key(stone: Mapping[str, Any]) -> str:
    """A stone's identity from its own features, stable across files and number spellings."""
    return (
        f"{float(stone['carat']):.2f}|{stone['cut']}|{stone['color']}|{stone['clarity']}|"
        f"{float(stone['depth']):.1f}|{float(stone['table']):.1f}|"
        f"{float(stone['x']):.2f}|{float(stone['y']):.2f}|{float(stone['z']):.2f}"
    )


def stone_id(stone: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_key(stone).encode()).hexdigest()[:16]


def is_holdout(stone: Mapping[str, Any]) -> bool:
    """Whether a stone belongs to the held-out split.

    Decided by a hash of the stone's own features, so a stone stays on the same side across
    data versions, duplicates never straddle the split, and a candidate and the champion are
    scored on the same rows.
    """
    return int(stone_id(stone)[:8], 16) % 100 < HOLDOUT_PERCENT
