"""The price form's fields, and how stones, prices and reasons read on the page.

Grades, their order and their meanings come from gemcast.schema, the one place that defines
them for the API, the model and this page; nothing here validates a stone (the API does, and
its words are shown beside the fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gemcast.schema import CATEGORIES, CATEGORY_MEANINGS, EXAMPLE_STONE, FEATURES, UNITS

LABELS: dict[str, str] = {
    "carat": "Carat",
    "cut": "Cut",
    "color": "Color",
    "clarity": "Clarity",
    "depth": "Total depth",
    "table": "Table",
    "x": "Length (x)",
    "y": "Width (y)",
    "z": "Depth (z)",
}

HINTS: dict[str, str] = {
    "carat": "Weight in carats, e.g. 0.7",
    "cut": "Best grade first",
    "color": "D is the best color, J the most tinted here",
    "clarity": "IF (internally flawless) is the best clarity, I1 the lowest",
    "depth": "z divided by the mean of x and y, in percent",
    "table": "Width of the top facet relative to the widest point, in percent",
    "x": "Length in millimetres",
    "y": "Width in millimetres",
    "z": "Depth (height) in millimetres",
}

# A typical well-cut stone (the API's own example), so the first price is one click away.
DEFAULTS: dict[str, str] = {k: v if isinstance(v, str) else f"{v:g}" for k, v in EXAMPLE_STONE.items()}


@dataclass(frozen=True)
class Option:
    value: str
    text: str


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    hint: str
    unit: str
    options: tuple[Option, ...] = ()

    @property
    def is_select(self) -> bool:
        return bool(self.options)


def form_fields() -> list[FormField]:
    fields = []
    for name in FEATURES:
        options: tuple[Option, ...] = ()
        if name in CATEGORIES:
            # Best grade first, as graders and price lists write them.
            options = tuple(Option(g, CATEGORY_MEANINGS[name][g]) for g in reversed(CATEGORIES[name]))
        fields.append(FormField(name, LABELS[name], HINTS[name], UNITS.get(name, ""), options))
    return fields


def stone_from_form(form: Mapping[str, str]) -> dict[str, Any]:
    """The request body: numbers as numbers where they parse, otherwise the text as typed,
    so the API judges it and names the problem in its own words."""
    stone: dict[str, Any] = {}
    for name in FEATURES:
        raw = (form.get(name) or "").strip()
        if name in CATEGORIES or raw == "":
            stone[name] = raw
            continue
        try:
            stone[name] = float(raw)
        except ValueError:
            stone[name] = raw
    return stone


def money(value: Any, *, signed: bool = False) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    sign = ("+" if number > 0 else "−" if number < 0 else "±") if signed else ("−" if number < 0 else "")
    return f"{sign}${abs(number):,.0f}"


def percent(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    sign = "+" if number > 0 else "−" if number < 0 else "±"
    return f"{sign}{abs(number):.1f} %"


def shown_value(feature: str, value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        unit = UNITS.get(feature, "")
        return f"{value:g} {unit}".strip()
    return str(value)


def stone_summary(stone: Any) -> str:
    """One line a person reads: '0.7 ct Ideal E VS1'."""
    if isinstance(stone, Mapping):
        carat = stone.get("carat")
        grades = " ".join(str(stone.get(k, "")) for k in ("cut", "color", "clarity")).strip()
        carat_text = f"{carat:g} ct" if isinstance(carat, int | float) else f"{carat} ct" if carat else ""
        return f"{carat_text} {grades}".strip() or "(empty stone)"
    if isinstance(stone, list):
        return f"{len(stone)} stones"
    return "(no stone)"


@dataclass(frozen=True)
class ReasonBar:
    feature: str
    label: str
    value: str
    effect_usd: float
    effect_pct: float
    x: float  # bar start, in the 0..200 viewBox of the row's chart
    width: float

    @property
    def direction(self) -> str:
        return "up" if self.effect_usd > 0 else "down" if self.effect_usd < 0 else "flat"


def reason_bars(reasons: Any) -> list[ReasonBar]:
    """Diverging bars around a centre line at 100: right raises the price, left lowers it."""
    rows = [r for r in reasons or [] if isinstance(r, Mapping) and "feature" in r]
    return _bars(
        [(str(r["feature"]), LABELS.get(str(r["feature"]), str(r["feature"])),
          shown_value(str(r["feature"]), r.get("value")), r) for r in rows]
    )


def group_bars(groups: Any) -> list[ReasonBar]:
    """The grouped reasons (size, color, clarity, cut, proportions) as bars, each with its meaning."""
    rows = [g for g in groups or [] if isinstance(g, Mapping) and "group" in g]
    return _bars([(str(g["group"]), str(g.get("label") or g["group"]), str(g.get("meaning") or ""), g)
                  for g in rows])


def _bars(rows: list[tuple[str, str, str, Mapping[str, Any]]]) -> list[ReasonBar]:
    biggest = max((abs(float(r.get("effect_usd") or 0.0)) for *_, r in rows), default=0.0) or 1.0
    bars = []
    for feature, label, value, r in rows:
        usd = float(r.get("effect_usd") or 0.0)
        width = max(abs(usd) / biggest * 98.0, 0.5)
        bars.append(
            ReasonBar(
                feature=feature,
                label=label,
                value=value,
                effect_usd=usd,
                effect_pct=float(r.get("effect_pct") or 0.0),
                x=100.0 if usd >= 0 else 100.0 - width,
                width=width,
            )
        )
    return bars


WHAT_IF_LABELS = {"color": "Color", "clarity": "Clarity", "cut": "Cut", "carat": "Weight"}


def what_if_rows(entries: Any) -> list[dict[str, str]]:
    """The what-if table's rows: what changes, from and to, the price and the difference."""
    rows = []
    for e in entries or []:
        if not isinstance(e, Mapping) or "change" not in e:
            continue
        change = str(e["change"])
        unit = " ct" if change == "carat" else ""
        rows.append({
            "change": f"{WHAT_IF_LABELS.get(change, change)} one grade {e.get('direction')}"
            if change != "carat" else "Weight at the next milestone",
            "from_to": f"{e.get('from')}{unit} → {e.get('to')}{unit}",
            "price": e.get("price"),
            "delta": e.get("delta_usd"),
        })
    return rows
