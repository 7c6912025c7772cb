"""The model card: Markdown, with a predicted-vs-actual plot drawn as SVG (no plotting library)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

PLOT_FILE = "pred_vs_actual.svg"
INTERVAL_PLOT_FILE = "price_ranges.svg"


def pred_vs_actual_svg(actual: Sequence[float], predicted: Sequence[float], *, max_points: int = 2500) -> str:
    """A log-log scatter of predicted against actual price, with the diagonal."""
    size, pad = 480, 56
    pairs = [(a, p) for a, p in zip(actual, predicted, strict=True) if a > 0 and p > 0]
    step = max(1, len(pairs) // max_points)
    pairs = pairs[::step]
    lo = math.log10(min(min(a, p) for a, p in pairs) * 0.9)
    hi = math.log10(max(max(a, p) for a, p in pairs) * 1.1)

    def pos(value: float, flip: bool) -> float:
        frac = (math.log10(value) - lo) / (hi - lo)
        span = size - 2 * pad
        return pad + (1 - frac) * span if flip else pad + frac * span

    ticks = [v for v in (300, 1000, 3000, 10000, 30000) if lo <= math.log10(v) <= hi]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="{size}" height="{size}" '
        'role="img" aria-label="Predicted against actual price on the held-out stones">',
        f'<rect width="{size}" height="{size}" fill="#ffffff"/>',
        f'<line x1="{pos(10**lo, False):.1f}" y1="{pos(10**lo, True):.1f}" x2="{pos(10**hi, False):.1f}" '
        f'y2="{pos(10**hi, True):.1f}" stroke="#999" stroke-dasharray="4 3"/>',
    ]
    for t in ticks:
        x, y = pos(t, False), pos(t, True)
        parts.append(f'<text x="{x:.1f}" y="{size - pad + 18}" font-size="11" text-anchor="middle">${t:,}</text>')
        parts.append(f'<text x="{pad - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">${t:,}</text>')
    parts.append(
        f'<rect x="{pad}" y="{pad}" width="{size - 2 * pad}" height="{size - 2 * pad}" fill="none" stroke="#333"/>'
    )
    for a, p in pairs:
        parts.append(f'<circle cx="{pos(a, False):.1f}" cy="{pos(p, True):.1f}" r="1.6" fill="#1f6feb" '
                     'fill-opacity="0.35"/>')
    parts.append(f'<text x="{size / 2}" y="{size - 12}" font-size="13" text-anchor="middle">actual price</text>')
    parts.append(f'<text x="16" y="{size / 2}" font-size="13" text-anchor="middle" '
                 f'transform="rotate(-90 16 {size / 2})">predicted price</text>')
    parts.append(f'<text x="{size / 2}" y="22" font-size="14" text-anchor="middle">'
                 f'Held-out stones ({len(pairs)} shown), log scale</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def interval_svg(ranges: Mapping[str, Mapping[str, float]]) -> str:
    """Stated against observed coverage of the price ranges on held-out stones, widths beside."""
    size, pad = 480, 56
    span = size - 2 * pad

    def pos(share: float, flip: bool) -> float:
        frac = (share - 40.0) / 60.0  # axes from 40 % to 100 %
        return pad + (1 - frac) * span if flip else pad + frac * span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="{size}" height="{size}" '
        'role="img" aria-label="Stated against observed coverage of the price ranges on held-out stones">',
        f'<rect width="{size}" height="{size}" fill="#ffffff"/>',
        f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#333"/>',
        f'<line x1="{pos(40, False):.1f}" y1="{pos(40, True):.1f}" x2="{pos(100, False):.1f}" '
        f'y2="{pos(100, True):.1f}" stroke="#999" stroke-dasharray="4 3"/>',
    ]
    for t in (40, 50, 60, 70, 80, 90, 100):
        parts.append(f'<text x="{pos(t, False):.1f}" y="{size - pad + 18}" font-size="11" '
                     f'text-anchor="middle">{t} %</text>')
        parts.append(f'<text x="{pad - 6}" y="{pos(t, True) + 4:.1f}" font-size="11" text-anchor="end">{t} %</text>')
    for r in ranges.values():
        x, y = pos(float(r["stated"]), False), pos(float(r["covered"]), True)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#1f6feb"/>')
        parts.append(f'<text x="{x + 8:.1f}" y="{y + 16:.1f}" font-size="11">{float(r["covered"]):.1f} % inside, '
                     f'median width {float(r["median_width_pct"]):.1f} %</text>')
    parts.append(f'<text x="{size / 2}" y="{size - 12}" font-size="13" text-anchor="middle">stated coverage</text>')
    parts.append(f'<text x="16" y="{size / 2}" font-size="13" text-anchor="middle" '
                 f'transform="rotate(-90 16 {size / 2})">held-out prices inside the range</text>')
    parts.append(f'<text x="{size / 2}" y="22" font-size="14" text-anchor="middle">'
                 f'Price ranges on held-out stones</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _range_section(metrics: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    ranges = metrics.get("ranges")
    if not ranges:
        return ""
    table = (model.get("metadata") or {}).get("intervals") or {}
    rows = "\n".join(
        f"| {r['stated']:.0f} % | {r['covered']:.1f} % | {r['median_width_pct']:.1f} % | "
        f"{r['p10_width_pct']:.1f} to {r['p90_width_pct']:.1f} % |"
        for r in ranges.values()
    )
    return f"""
## Price ranges
Every price comes with a range, {table.get('default', 80)} % by default. Method: split conformal
prediction on log price ({table.get('method', '')}), calibrated on {table.get('calibration_rows')}
training rows the model never trained on, in {len(table.get('edges', [])) + 1} bins by predicted
price, so a range's width depends on the stone. On the held-out rows:

| stated | true prices inside | median width | 10th to 90th percentile width |
|---|---|---|---|
{rows}

Width is (high - low) / price. ![Price ranges]({INTERVAL_PLOT_FILE})
"""


def _metric_rows(metrics: Mapping[str, Any]) -> str:
    labels = {"mae": "MAE (USD)", "mape": "MAPE (%)", "rmse": "RMSE (USD)", "r2": "R2", "n": "stones"}
    return "\n".join(f"| {labels.get(k, k)} | {v} |" for k, v in metrics.items())


def model_card(manifest: Mapping[str, Any]) -> str:
    """The model card in Markdown, from the manifest's facts."""
    data = manifest.get("data", {})
    model = manifest.get("model", {})
    metrics = manifest.get("metrics", {})
    rejected = data.get("rejected_by_reason", {})
    rejected_lines = "\n".join(f"- {k}: {v}" for k, v in rejected.items()) or "- none"
    params = "\n".join(f"- `{k}`: {v}" for k, v in sorted(model.get("params", {}).items()))
    uri = str(data.get("uri") or "")
    ingest_note = (
        f"\nThe data was cleaned once already when each batch arrived: the rows rejected then are kept, "
        f"with their reasons, under `{uri[: -len('curated/')]}rejected/`.\n"
        if uri.endswith("curated/") else ""
    )
    baseline = metrics.get("baseline_linear")
    baseline_text = (
        f"The linear baseline (ridge regression on log price) scores MAE ${baseline['mae']:,.0f} and "
        f"MAPE {baseline['mape']:.2f} % on the same rows." if baseline else ""
    )
    return f"""# gemcast model {manifest.get('version')}

Created {manifest.get('created')} by gemcast {manifest.get('libraries', {}).get('gemcast')}.

## What it does
Predicts the price in US dollars (2008) of a round diamond from its carat, cut, color,
clarity, depth, table and dimensions x, y, z. The model is a {model.get('kind')} model
trained on log(price); every prediction comes with the contribution of each feature
(exact Shapley values of the log-price prediction), grouped as size, color, clarity, cut and
proportions (each group the sum of its inputs' Shapley values, see gemcast.reasons).

## Data
- source: {data.get('uri')}
- snapshot: `{data.get('snapshot_id')}`
- rows read: {data.get('rows')}; accepted: {data.get('accepted')}; rejected: {data.get('rejected')}
- training rows: {data.get('train_rows')}; held-out rows: {data.get('holdout_rows')} (chosen by a
  hash of each stone's features, {data.get('holdout_percent')} %, so the split is stable across data versions)

Rejected rows, by reason (each kept with its reasons in `rejected.jsonl`):
{rejected_lines}
{ingest_note}
## Held-out metrics
| metric | value |
|---|---|
{_metric_rows(metrics.get('holdout', {}))}

{baseline_text}

![Predicted against actual price]({PLOT_FILE})
{_range_section(metrics, model)}
## Parameters
{params}

## Drift
The request log is compared with this model's training data every day; the latest drift
report is [monitoring/drift/latest.md](../../monitoring/drift/latest.md) in the same bucket.

## Limits
- Trained on stones of {data.get('carat_range', 'the training range')} carat; prices outside the data's range
  ($326 to $18,823 in the bundled data) are extrapolations.
- Prices are of 2008; the model knows nothing of the market since.
- Only round stones; fancy shapes are out of scope.
"""
