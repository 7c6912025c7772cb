"""The Models page's content: every model trained (GET /v1/models), as table rows and as a plot
of held-out MAE and MAPE per version, the champion marked. The plot is SVG markup made here on
the server (no script, no CDN), with presentation attributes only, so the page's CSP holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

from gemcast_web.stones import money

WIDTH, HEIGHT = 640, 210
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 46, 30
CHAMPION_FILL, OTHER_FILL = "#b8860b", "#6b7f99"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def rows(models: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per version, newest first, as the API gives them."""
    out = []
    for m in models:
        metrics = m.get("metrics") if isinstance(m.get("metrics"), Mapping) else {}
        data = m.get("trained_on") if isinstance(m.get("trained_on"), Mapping) else {}
        gate = m.get("gate") if isinstance(m.get("gate"), Mapping) else {}
        assert isinstance(metrics, Mapping) and isinstance(data, Mapping) and isinstance(gate, Mapping)
        mae, mape = _number(metrics.get("mae")), _number(metrics.get("mape"))
        promote = gate.get("promote")
        decision = "promoted" if promote is True else "kept the champion" if promote is False else ""
        out.append({
            "version": str(m.get("version", "")),
            "created": str(m.get("created") or "").replace("T", " ").rstrip("Z"),
            "kind": str(m.get("kind") or ""),
            "mae": money(mae) if mae is not None else "–",
            "mape": f"{mape:.2f} %" if mape is not None else "–",
            "rows": " / ".join(f"{data[k]:,}" for k in ("accepted", "train_rows", "holdout_rows")
                               if isinstance(data.get(k), int)) or "–",
            "snapshot": str(data.get("snapshot_id") or ""),
            "gate": decision,
            "reason": str(gate.get("reason") or ""),
            "champion": bool(m.get("champion")),
        })
    return out


def _panel(models: Sequence[Mapping[str, Any]], key: str, title: str, label: Any, y0: int) -> list[str]:
    """One bar chart of ``key`` per version (oldest left), starting ``y0`` pixels down."""
    values = [_number((m.get("metrics") or {}).get(key)) for m in models]
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(1, len(models))
    bar = max(4.0, min(48.0, step * 0.6))
    parts = [f'<text x="{LEFT}" y="{y0 + 18}" font-size="14" font-weight="bold" fill="#222">{escape(title)}</text>',
             f'<line x1="{LEFT}" y1="{y0 + TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{y0 + TOP + plot_h}" '
             f'stroke="#888" stroke-width="1"/>',
             f'<text x="{LEFT - 6}" y="{y0 + TOP + 10}" font-size="11" text-anchor="end" fill="#444">'
             f'{escape(label(top))}</text>']
    for i, (m, value) in enumerate(zip(models, values, strict=True)):
        x = LEFT + i * step + (step - bar) / 2
        version = str(m.get("version", ""))
        champion = bool(m.get("champion"))
        if value is not None:
            h = plot_h * value / top
            y = y0 + TOP + plot_h - h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'fill="{CHAMPION_FILL if champion else OTHER_FILL}">'
                         f'<title>{escape(version)}: {escape(label(value))}</title></rect>')
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{y - 4:.1f}" font-size="11" text-anchor="middle" '
                         f'fill="#222">{escape(label(value))}{" ★" if champion else ""}</text>')
        short = version[:15] + ("…" if len(version) > 15 else "")
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{y0 + TOP + plot_h + 16}" font-size="10" '
                     f'text-anchor="middle" fill="#444">{escape(short)}</text>')
    return parts


def plot(models: Sequence[Mapping[str, Any]]) -> Markup:
    """Held-out MAE (US dollars) and MAPE (percent) per version, oldest to newest; the champion's
    bars in gold with a star. Empty markup when there is nothing to plot."""
    if not models:
        return Markup("")
    ordered = list(reversed(models))  # the API gives newest first; a history reads left to right
    champion = next((str(m.get("version")) for m in models if m.get("champion")), "none")
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {2 * HEIGHT}" role="img" '
        f'aria-labelledby="history-plot-title history-plot-desc" class="history-plot" id="history-plot">',
        '<title id="history-plot-title">Held-out error of every model version</title>',
        f'<desc id="history-plot-desc">Bars of mean absolute error in dollars and mean absolute percentage '
        f'error per version, oldest first; the champion, {escape(champion)}, is gold with a star.</desc>',
        *_panel(ordered, "mae", "Mean absolute error (held-out)", lambda v: money(v), 0),
        *_panel(ordered, "mape", "Mean absolute percentage error (held-out)", lambda v: f"{v:.2f} %", HEIGHT),
        "</svg>",
    ]
    return Markup("\n".join(body))
