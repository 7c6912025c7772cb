"""Drift of the stones people ask about, and of the prices given, from the prediction log.

At training time ``training_summary`` writes what the model learned from into its package
(``training_summary.json``): per numeric feature ten quantile bins and their shares, per grade
its shares, and the model's own held-out predicted prices binned the same way. At monitoring
time ``check_drift`` reads one window of the prediction log, bins the stones that were priced
in that window the same way and compares shares with the population stability index

    PSI = sum over bins of (window share - training share) * ln(window share / training share)

(shares floored at ``SHARE_FLOOR`` so an empty bin stays finite). 0.1 is commonly read as a
moderate and 0.25 as a significant shift. The overall score is the largest PSI of any feature
or of the prices: one input that moved is enough to make the model's answers suspect.

A window with fewer than ``min_stones`` priced stones gets a report that says so, with no
score and no alarm; log records that cannot be read are counted, never fatal. No training
data is read here, and no numpy is needed: the Lambda package stays small.

The report is JSON and a Markdown page with one SVG of every feature's shares, written under
``monitoring/drift/<window end>/`` and copied to ``monitoring/drift/latest.*`` (the model card
links there). Publishing the metric is the doorway's job: ``metric_points`` says what to publish.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from gemcast.errors import GemcastError, NotFoundError
from gemcast.routes import by_operation
from gemcast.schema import CATEGORIES, FEATURES, check_stone

PREDICT_ROUTE = by_operation("createPrediction").key  # the prediction log's route of a pricing

logger = logging.getLogger(__name__)

SUMMARY_FILE = "training_summary.json"
REPORT_PREFIX = "monitoring/drift/"
PLOT_FILE = "drift.svg"
PRICE = "price"  # the predicted price, compared like a feature
BINS = 10
SHARE_FLOOR = 1e-4
DEFAULT_THRESHOLD = 0.25
DEFAULT_MIN_STONES = 200
DEFAULT_WINDOW_HOURS = 24.0

# What reading a damaged record raises: bad JSON or base64 (ValueError), bad zlib, wrong types.
UNREADABLE = (GemcastError, ValueError, TypeError, KeyError, AttributeError, zlib.error)

STATUS_OK = "ok"
STATUS_DRIFT = "drift"
STATUS_TOO_FEW = "insufficient_data"
STATUS_NO_SUMMARY = "no_training_summary"


# -- the training side ---------------------------------------------------------------------------
def _quantile_edges(values: Sequence[float], bins: int = BINS) -> list[float]:
    ordered = sorted(values)
    edges: list[float] = []
    for i in range(1, bins):
        edge = ordered[min(len(ordered) - 1, (i * len(ordered)) // bins)]
        if not edges or edge > edges[-1]:
            edges.append(float(edge))
    return edges


def _bin_shares(values: Sequence[float], edges: Sequence[float]) -> list[float]:
    """Shares of values per bin: bin i holds edges[i-1] <= v < edges[i]; both ends open."""
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bisect.bisect_right(edges, v)] += 1
    total = max(1, len(values))
    return [c / total for c in counts]


def _numeric_summary(values: Sequence[float]) -> dict[str, Any]:
    edges = _quantile_edges(values)
    return {"kind": "numeric", "n": len(values), "edges": edges, "shares": _bin_shares(values, edges),
            "mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def _category_shares(values: Sequence[str], categories: Sequence[str]) -> list[float]:
    total = max(1, len(values))
    return [sum(1 for v in values if v == c) / total for c in categories]


def training_summary(stones: Sequence[Mapping[str, Any]], predicted_prices: Sequence[float], *,
                     version: str = "", snapshot_id: str = "") -> dict[str, Any]:
    """What monitoring compares with: the training stones' features and the model's prices."""
    if not stones or not predicted_prices:
        raise ValueError("a training summary needs stones and predicted prices")
    features: dict[str, Any] = {}
    for name in FEATURES:
        if name in CATEGORIES:
            values = [str(s[name]) for s in stones]
            features[name] = {"kind": "categorical", "n": len(values), "categories": list(CATEGORIES[name]),
                              "shares": _category_shares(values, CATEGORIES[name])}
        else:
            features[name] = _numeric_summary([float(s[name]) for s in stones])
    features[PRICE] = _numeric_summary([float(p) for p in predicted_prices])
    return {"version": version, "snapshot_id": snapshot_id, "bins": BINS, "features": features,
            "note": "numeric: quantile bins of the training rows; price: the model's predictions on the "
                    "held-out rows"}


# -- reading the log -----------------------------------------------------------------------------
@dataclass
class WindowSample:
    """The priced stones of a window, and what could not be used."""

    stones: list[dict[str, Any]] = field(default_factory=list)
    prices: list[float] = field(default_factory=list)
    records: int = 0
    requests: int = 0  # successful prediction requests
    failed_requests: int = 0  # status other than 200: nothing was priced
    other_routes: int = 0
    invalid_stones: int = 0  # refused by validation: counted, not compared
    malformed: int = 0  # records that could not be read
    malformed_examples: list[str] = field(default_factory=list)
    model_versions: dict[str, int] = field(default_factory=dict)

    def add_malformed(self, why: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < 5:
            self.malformed_examples.append(why[:200])

    def counts(self) -> dict[str, Any]:
        return {"records": self.records, "requests": self.requests, "failed_requests": self.failed_requests,
                "other_routes": self.other_routes, "stones": len(self.stones),
                "invalid_stones": self.invalid_stones, "malformed_records": self.malformed,
                "malformed_examples": self.malformed_examples, "model_versions": self.model_versions}


def _request_stones(request: Any) -> list[Any]:
    from gemcast.predict import parse_instances

    stones, _single = parse_instances(request)
    return stones


def _response_predictions(response: Mapping[str, Any], n: int) -> list[Mapping[str, Any]]:
    if isinstance(response.get("predictions"), list):
        return list(response["predictions"])
    if n == 1:
        return [response]
    raise ValueError(f"a response to {n} stones without predictions")


def add_record(sample: WindowSample, record: Any) -> None:
    """One decoded log record into the sample (malformed ones counted, with why)."""
    sample.records += 1
    if not isinstance(record, Mapping):
        sample.add_malformed(f"not a record: {type(record).__name__}")
        return
    if record.get("route", PREDICT_ROUTE) != PREDICT_ROUTE:
        sample.other_routes += 1
        return
    try:
        status = int(record["status"])
    except (KeyError, TypeError, ValueError):
        sample.add_malformed(f"{record.get('request_id')}: no status")
        return
    if status != 200:
        sample.failed_requests += 1
        return
    response = record.get("response")
    try:
        stones = _request_stones(record.get("request"))
        if not isinstance(response, Mapping):
            raise ValueError("the response is not an object")
        answers = _response_predictions(response, len(stones))
        if len(answers) != len(stones):
            raise ValueError(f"{len(stones)} stones but {len(answers)} answers")
    except UNREADABLE as exc:  # counted, never fatal
        sample.add_malformed(f"{record.get('request_id')}: {exc}")
        return
    sample.requests += 1
    version = str(record.get("model_version") or response.get("model_version") or "")
    sample.model_versions[version] = sample.model_versions.get(version, 0) + 1
    for raw, answer in zip(stones, answers, strict=True):
        values, problems = check_stone(raw)
        price = answer.get("price") if isinstance(answer, Mapping) else None
        if problems or not isinstance(price, int | float) or isinstance(price, bool):
            sample.invalid_stones += 1
            continue
        sample.stones.append(values)
        sample.prices.append(float(price))


def read_window(items: Iterable[Any], decode: Callable[[Any], Any]) -> WindowSample:
    """The sample of stored log items; ``decode`` turns one item into a record (it may raise)."""
    sample = WindowSample()
    for item in items:
        try:
            record = decode(item)
        except UNREADABLE as exc:  # a record we cannot decode is counted, never fatal
            sample.records += 1
            sample.add_malformed(f"undecodable item: {type(exc).__name__}: {exc}")
            continue
        add_record(sample, record)
    return sample


# -- comparing -----------------------------------------------------------------------------------
def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, SHARE_FLOOR), max(a, SHARE_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def _compare(summary: Mapping[str, Any], values: Sequence[Any]) -> dict[str, Any]:
    if summary["kind"] == "categorical":
        actual = _category_shares([str(v) for v in values], summary["categories"])
        return {"kind": "categorical", "categories": summary["categories"], "expected": summary["shares"],
                "actual": actual, "psi": round(psi(summary["shares"], actual), 6)}
    numbers = [float(v) for v in values]
    actual = _bin_shares(numbers, summary["edges"])
    return {"kind": "numeric", "edges": summary["edges"], "expected": summary["shares"], "actual": actual,
            "psi": round(psi(summary["shares"], actual), 6), "training_mean": round(summary["mean"], 4),
            "window_mean": round(sum(numbers) / len(numbers), 4),
            "window_min": min(numbers), "window_max": max(numbers)}


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    @classmethod
    def ending(cls, end: datetime | None = None, hours: float = DEFAULT_WINDOW_HOURS) -> Window:
        end = (end or datetime.now(UTC)).astimezone(UTC)
        return cls(end - timedelta(hours=hours), end)

    @staticmethod
    def stamp(moment: datetime) -> str:
        """The log's own time format (``created_at``), which sorts as text."""
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @property
    def start_text(self) -> str:
        return self.stamp(self.start)

    @property
    def end_text(self) -> str:
        return self.stamp(self.end)

    @property
    def key(self) -> str:
        return self.end.astimezone(UTC).strftime("%Y-%m-%dT%H%M%SZ")


def window_for(event: Any, hours: float = DEFAULT_WINDOW_HOURS, now: datetime | None = None) -> Window:
    """The window a run covers: ``window_end`` (ISO 8601) and ``window_hours`` of the event when
    given (a manual run over a past day), else the ``hours`` ending now (the schedule)."""
    from gemcast.errors import ValidationError

    event = event if isinstance(event, Mapping) else {}
    end = now
    if event.get("window_end") is not None:
        try:
            end = datetime.fromisoformat(str(event["window_end"]).replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValidationError(f"window_end is not an ISO 8601 time: {event['window_end']!r}",
                                  {"window_end": "must be an ISO 8601 time"}) from exc
        if end.tzinfo is None:
            end = end.replace(tzinfo=UTC)
    if event.get("window_hours") is not None:
        try:
            hours = float(event["window_hours"])
        except (TypeError, ValueError):
            hours = -1.0
        if not 0 < hours <= 24 * 31:
            raise ValidationError(f"window_hours must be a number of hours in (0, 744], got "
                                  f"{event['window_hours']!r}", {"window_hours": "must be in (0, 744]"})
    return Window.ending(end, hours)


def compare(summary: Mapping[str, Any] | None, sample: WindowSample, window: Window, *,
            threshold: float = DEFAULT_THRESHOLD, min_stones: int = DEFAULT_MIN_STONES,
            model_version: str = "") -> dict[str, Any]:
    """The drift report of one window (see the module docstring)."""
    report: dict[str, Any] = {
        "kind": "gemcast drift report", "window": {"start": window.start_text, "end": window.end_text},
        "model_version": model_version, "threshold": threshold, "min_stones": min_stones,
        "counts": sample.counts(), "score": None, "worst_feature": None, "alarm": False, "features": {},
    }
    if summary is None:
        report.update(status=STATUS_NO_SUMMARY,
                      message=f"the champion {model_version or '(none)'} has no {SUMMARY_FILE}: retrain it to monitor")
        return report
    if len(sample.stones) < min_stones:
        report.update(status=STATUS_TOO_FEW,
                      message=f"only {len(sample.stones)} priced stones in the window (at least {min_stones} "
                              "are needed for a score): no score, no alarm")
        return report
    features: dict[str, Any] = {}
    for name, feature in summary["features"].items():
        values = sample.prices if name == PRICE else [s[name] for s in sample.stones]
        features[name] = _compare(feature, values)
    worst = max(features, key=lambda n: features[n]["psi"])
    score = features[worst]["psi"]
    alarm = score > threshold
    report.update(features=features, score=score, worst_feature=worst, alarm=alarm,
                  status=STATUS_DRIFT if alarm else STATUS_OK,
                  message=(f"{worst} moved away from the training data (PSI {score:.3f} > {threshold})" if alarm
                           else f"no drift above {threshold}: largest PSI {score:.3f} ({worst})"))
    return report


# -- the whole check -----------------------------------------------------------------------------
def champion_summary(registry: Any) -> tuple[str, dict[str, Any] | None]:
    """The champion's version and training summary (None when it has none, or no champion)."""
    pointer = registry.champion()
    if pointer is None:
        return "", None
    version = str(pointer["version"])
    try:
        return version, dict(json.loads(registry.read_file(version, SUMMARY_FILE)))
    except NotFoundError:
        return version, None


def check_drift(items: Iterable[Any], decode: Callable[[Any], Any], registry: Any, reports: Any,
                window: Window, *, threshold: float = DEFAULT_THRESHOLD,
                min_stones: int = DEFAULT_MIN_STONES) -> dict[str, Any]:
    """Read the window's log items, compare with the champion's summary, write the report.

    ``reports`` is the bucket's storage (the report goes under ``REPORT_PREFIX``).
    """
    version, summary = champion_summary(registry)
    sample = read_window(items, decode)
    report = compare(summary, sample, window, threshold=threshold, min_stones=min_stones, model_version=version)
    report["report_uri"] = write_report(reports, report, window)
    logger.info("drift %s: %s", report["status"], report["message"])
    return report


def write_report(storage: Any, report: Mapping[str, Any], window: Window) -> str:
    """``monitoring/drift/<window end>/report.{json,md}`` + drift.svg, and ``latest.*`` beside them."""
    folder = f"{REPORT_PREFIX}{window.key}/"
    body = (json.dumps(report, indent=2, default=str) + "\n").encode()
    svg = drift_svg(report).encode() if report.get("features") else None
    storage.write_bytes(f"{folder}report.json", body, "application/json")
    storage.write_bytes(f"{folder}report.md", markdown(report).encode(), "text/markdown")
    if svg is not None:
        storage.write_bytes(f"{folder}{PLOT_FILE}", svg, "image/svg+xml")
    storage.write_bytes(f"{REPORT_PREFIX}latest.json", body, "application/json")
    storage.write_bytes(f"{REPORT_PREFIX}latest.md", markdown(report, plot_prefix=f"{window.key}/").encode(),
                        "text/markdown")
    uri = str(getattr(storage, "uri", "")).rstrip("/")
    return f"{uri}/{folder}report.json" if uri else f"{folder}report.json"


COUNTS = frozenset({"DriftStones", "DriftMalformedRecords"})  # the other metrics are PSI values


def metric_points(report: Mapping[str, Any]) -> list[tuple[str, dict[str, str], float]]:
    """What a doorway publishes: (metric, labels, value). The score only when there is one,
    so a window with too little data leaves the alarm's metric missing (not breaching)."""
    counts = report.get("counts", {})
    points: list[tuple[str, dict[str, str], float]] = [
        ("DriftStones", {}, float(counts.get("stones", 0))),
        ("DriftMalformedRecords", {}, float(counts.get("malformed_records", 0))),
    ]
    if report.get("score") is not None:
        points.append(("DriftScore", {}, float(report["score"])))
        for name, feature in report.get("features", {}).items():
            points.append(("FeatureDrift", {"feature": name}, float(feature["psi"])))
    return points


# -- the Markdown page and its plot ----------------------------------------------------------------
def _labels(feature: Mapping[str, Any]) -> list[str]:
    if feature["kind"] == "categorical":
        return [str(c) for c in feature["categories"]]
    edges = feature["edges"]
    return [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:], strict=False)] + \
        [f">={edges[-1]:g}"]


def drift_svg(report: Mapping[str, Any]) -> str:
    """One panel per feature: training shares (grey) against the window's (blue), with PSI."""
    features = report["features"]
    cols, pw, ph, pad = 2, 360, 150, 28
    rows = math.ceil(len(features) / cols)
    width, height = cols * pw, rows * ph + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img" aria-label="Shares per bin, training against the window">',
             f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
             f'<text x="8" y="18" font-size="13">Training (grey) against window (blue); '
             f'threshold PSI {report["threshold"]}</text>']
    for i, (name, feature) in enumerate(features.items()):
        ox, oy = (i % cols) * pw, 30 + (i // cols) * ph
        n = len(feature["expected"])
        top = max(max(feature["expected"]), max(feature["actual"]), 1e-9)
        bar = (pw - 2 * pad) / n
        colour = "#cf222e" if feature["psi"] > report["threshold"] else "#333"
        parts.append(f'<text x="{ox + pad}" y="{oy + 14}" font-size="12" fill="{colour}">{name}: '
                     f'PSI {feature["psi"]:.3f}</text>')
        base = oy + ph - pad
        for j, (e, a) in enumerate(zip(feature["expected"], feature["actual"], strict=True)):
            x = ox + pad + j * bar
            for k, (share, fill) in enumerate(((e, "#8c959f"), (a, "#1f6feb"))):
                h = (ph - 2 * pad - 8) * share / top
                parts.append(f'<rect x="{x + 1 + k * bar / 2:.1f}" y="{base - h:.1f}" width="{bar / 2 - 1:.1f}" '
                             f'height="{h:.1f}" fill="{fill}"/>')
        parts.append(f'<line x1="{ox + pad}" y1="{base}" x2="{ox + pw - pad}" y2="{base}" stroke="#333"/>')
        labels = _labels(feature)
        for j in (range(n) if feature["kind"] == "categorical" else (0, n - 1)):
            parts.append(f'<text x="{ox + pad + (j + 0.5) * bar:.1f}" y="{base + 12}" font-size="9" '
                         f'text-anchor="middle">{escape(labels[j])}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def markdown(report: Mapping[str, Any], *, plot_prefix: str = "") -> str:
    counts = report.get("counts", {})
    lines = [
        f"# Drift report: {report['window']['start']} to {report['window']['end']}", "",
        f"- model: `{report.get('model_version') or 'none'}`",
        f"- status: **{report['status']}**: {report.get('message', '')}",
        f"- score (largest PSI): {report['score'] if report['score'] is not None else 'none'}"
        f"; alarm above {report['threshold']}: {'yes' if report['alarm'] else 'no'}",
        f"- log records: {counts.get('records', 0)} read; {counts.get('requests', 0)} priced requests with "
        f"{counts.get('stones', 0)} stones; {counts.get('failed_requests', 0)} failed requests; "
        f"{counts.get('invalid_stones', 0)} invalid stones; {counts.get('malformed_records', 0)} malformed "
        "records (counted, not used)",
        "",
    ]
    if counts.get("malformed_examples"):
        lines += ["Malformed records (first few):", ""] + [f"- {m}" for m in counts["malformed_examples"]] + [""]
    features = report.get("features") or {}
    if features:
        lines += ["| feature | PSI | training mean | window mean |", "|---|---|---|---|"]
        for name, f in sorted(features.items(), key=lambda kv: -kv[1]["psi"]):
            lines.append(f"| {name} | {f['psi']:.3f} | {f.get('training_mean', '')} | {f.get('window_mean', '')} |")
        lines += ["", f"![Shares per bin, training against the window]({plot_prefix}{PLOT_FILE})", ""]
        for name, f in features.items():
            shares = ", ".join(f"{label} {e:.0%}->{a:.0%}"
                               for label, e, a in zip(_labels(f), f["expected"], f["actual"], strict=True))
            lines.append(f"- {name}: {shares}")
        lines.append("")
    lines.append("PSI below 0.1: no real change; 0.1 to 0.25: moderate; above 0.25: significant. "
                 "On alarm the training trigger runs; the promotion gate still decides.")
    return "\n".join(lines) + "\n"


# -- the log stores ------------------------------------------------------------------------------
def dynamodb_items(table: Any, window: Window) -> Iterable[dict[str, Any]]:
    """The prediction log table's items of the window (a filtered scan, page by page: the table
    has no index by time, and one window's scan is a daily job, not a request path)."""
    from boto3.dynamodb.conditions import Attr

    condition = Attr("created_at").gte(window.start_text) & Attr("created_at").lt(window.end_text)
    kwargs: dict[str, Any] = {"FilterExpression": condition}
    while True:
        page = table.scan(**kwargs)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def firestore_items(client: Any, collection: str, window: Window) -> Iterable[dict[str, Any]]:
    """The prediction log collection's documents of the window (a single-field range query)."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = (client.collection(collection).where(filter=FieldFilter("created_at", ">=", window.start_text))
             .where(filter=FieldFilter("created_at", "<", window.end_text)))
    for snap in query.stream():
        yield snap.to_dict()
