"""Reasons in the trade's words: the per-input Shapley values grouped as a buyer thinks.

The method, exactly
-------------------
``Model.explain`` gives, per stone, the exact Shapley value phi_i of every model input i (the
path-dependent TreeSHAP game of Lundberg et al., computed exactly, see
``gemcast.model.TreeEnsembleModel``; for the linear model the interventional values). The
inputs are partitioned into five groups (``GROUPS``):

- ``size``: carat and the measurements x, y, z (and any derived input of size alone);
- ``color``, ``clarity``, ``cut``: the grade alone;
- ``proportions``: depth %, table %, length / width (roundness), weight for the measured
  box (carat / xyz) and the other shape ratios.

A group's value is the *sum of its members' Shapley values*, phi_G = sum_{i in G} phi_i, in
log price, computed from the unrounded values. By the efficiency of the Shapley value the
five group values add up to log(price) - log(base price) exactly (to floating point), and in
dollars each group gets phi_G * L with L the logarithmic mean of price and base price (as for
one input, ``Model.reasons``), so the dollars add up to price - base price. Nothing is a sum
of rounded parts.

What this is not: summing members' Shapley values is not the Shapley value of the game whose
players are the five groups (that would split interactions *between* groups differently,
e.g. between carat and color); the sum is what the per-input values shown in "details" add
up to, which is why it is used. Each derived input belongs to exactly one group, so no
input's value is ever split between groups; a derived input mixing two groups (say color x
clarity) is therefore not allowed as a model input (``group_of`` refuses it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gemcast.schema import CATEGORIES, CATEGORY_MEANINGS

GROUPS: dict[str, tuple[str, ...]] = {
    "size": ("carat", "x", "y", "z", "xyz", "(x+y)/2"),
    "color": ("color",),
    "clarity": ("clarity",),
    "cut": ("cut",),
    "proportions": ("depth", "table", "x/y", "carat/xyz", "spread", "depth_gap"),
}
GROUP_LABELS = {"size": "Size", "color": "Color", "clarity": "Clarity", "cut": "Cut", "proportions": "Proportions"}
_GROUP_OF = {name: group for group, names in GROUPS.items() for name in names}


def group_of(input_name: str) -> str:
    """The group of one model input; KeyError for an input no group claims."""
    return _GROUP_OF[input_name]


def group_phi(input_names: Sequence[str], phi: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """(group names, phi_G): per-input Shapley values (n x inputs) summed per group (n x groups)."""
    groups = tuple(g for g in GROUPS if any(group_of(n) == g for n in input_names))
    member = np.zeros((len(input_names), len(groups)))
    for i, name in enumerate(input_names):
        member[i, groups.index(group_of(name))] = 1.0
    return groups, np.asarray(phi, dtype=np.float64) @ member


def _grade_steps(feature: str, value: str, typical: Mapping[str, Any] | None) -> str:
    meaning = CATEGORY_MEANINGS[feature].get(value, value)
    if not typical or feature not in typical:
        return meaning
    levels = CATEGORIES[feature]
    typ = str(typical[feature])
    steps = levels.index(value) - levels.index(typ)
    if steps == 0:
        return f"{meaning}, the typical stone's grade"
    word = "grade" if abs(steps) == 1 else "grades"
    side = "above" if steps > 0 else "below"
    return f"{meaning}, {abs(steps)} {word} {side} the typical stone ({typ})"


def meaning(group: str, stone: Mapping[str, Any], typical: Mapping[str, Any] | None = None) -> str:
    """What the group says of this stone, in words ("E: colorless, 2 grades above the typical stone (G)")."""
    if group == "size":
        text = f"{stone['carat']:.2f} ct, {stone['x']:.2f} x {stone['y']:.2f} x {stone['z']:.2f} mm"
        if typical and "carat" in typical:
            text += f"; the typical stone weighs {float(typical['carat']):.2f} ct"
        return text
    if group in CATEGORIES:
        return _grade_steps(group, str(stone[group]), typical)
    roundness = stone["x"] / stone["y"] if stone["y"] else float("nan")
    text = f"depth {stone['depth']:.1f} %, table {stone['table']:.0f} %, length / width {roundness:.2f}"
    if typical and "depth" in typical and "table" in typical:
        text += f" (typical: depth {float(typical['depth']):.1f} %, table {float(typical['table']):.0f} %)"
    return text


def grouped(
    per_input: Sequence[Mapping[str, Any]], stone: Mapping[str, Any], typical: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The grouped reasons of one stone from its unrounded per-input reasons (``Model.reasons_batch``).

    Each entry: ``group``, ``label``, ``meaning``, ``effect_usd`` (sum of the members' dollars,
    unrounded), ``effect_pct`` (exp(phi_G) - 1, in percent, with phi_G the sum of the members'
    log-price Shapley values) and ``inputs`` (the members). In the order of ``GROUPS``.
    """
    usd: dict[str, float] = {}
    log: dict[str, float] = {}
    members: dict[str, list[str]] = {}
    for r in per_input:
        g = group_of(str(r["feature"]))
        usd[g] = usd.get(g, 0.0) + float(r["effect_usd"])
        # effect_pct = expm1(phi) * 100 exactly; log1p inverts it to the last bits.
        log[g] = log.get(g, 0.0) + math.log1p(float(r["effect_pct"]) / 100.0)
        members.setdefault(g, []).append(str(r["feature"]))
    return [
        {
            "group": g,
            "label": GROUP_LABELS[g],
            "meaning": meaning(g, stone, typical),
            "effect_usd": usd[g],
            "effect_pct": math.expm1(log[g]) * 100.0,
            "inputs": members[g],
        }
        for g in GROUPS
        if g in usd
    ]


def typical_stone(X: np.ndarray) -> dict[str, Any]:
    """The training data's typical stone (medians; grades by their median code), for the meanings."""
    from gemcast.schema import FEATURES

    X = np.asarray(X, dtype=np.float64)
    out: dict[str, Any] = {}
    for j, f in enumerate(FEATURES):
        med = float(np.median(X[:, j]))
        if f in CATEGORIES:
            out[f] = CATEGORIES[f][int(round(med))]
        elif f in ("carat", "depth", "table"):
            out[f] = round(med, 2)
    return out
