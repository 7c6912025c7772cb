"""Pricing stones with a loaded model: request parsing, validation, batching, prices and reasons.

Shared by the serving process (SageMaker and Vertex AI contracts), the CLI, ``gemcast score``
and the API. A batch is priced in one vectorized call; an invalid stone gets its own error and
does not fail the others.

One place each, so that a new per-stone field or request parameter is a few lines:
- request parameters: :class:`PriceOptions` (``parse_options``), whatever carried them (Vertex
  ``parameters``, a query string, SageMaker's custom attributes header);
- the answer of each stone: :meth:`Predictor.price`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from gemcast.answer import DEFAULT_COVERAGE, check_coverage, extras
from gemcast.errors import ValidationError
from gemcast.schema import (
    CATEGORIES,
    FEATURES,
    NUMERIC,
    Problem,
    as_finite,
    check_stone,
    encode,
    plainly_valid,
)

# The API's limit a request (API Gateway and Lambda answers are small); the model server takes
# as many stones as fit in its body limit.
MAX_BATCH = 1000
ENVELOPE_KEYS = ("instances", "stones")


@dataclass(frozen=True)
class PriceOptions:
    """What a request may ask for besides its stones; every field has its default here."""

    reasons: bool = True
    coverage: int = DEFAULT_COVERAGE  # percent of stones the price range holds (gemcast.answer)
    what_if: bool = False  # the neighbouring grades and the next carat milestone, priced


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_options(raw: Any, *, where: str = "parameters") -> PriceOptions:
    """PriceOptions from a mapping of JSON values, or of text (a query string, a header).

    Unknown names and values of the wrong type are a ValidationError naming ``where.name``:
    ``"reasons": "false"`` means false, never true because the text is not empty.
    """
    if raw is None:
        return PriceOptions()
    if not isinstance(raw, Mapping):
        raise ValidationError(f"'{where}' must be an object", {where: "must be an object"})
    known = {f.name: f for f in fields(PriceOptions)}
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, value in raw.items():
        if name not in known:
            problems[f"{where}.{name}"] = f"unknown parameter; known: {', '.join(known)}"
            continue
        default = getattr(PriceOptions(), name)
        if name == "coverage":
            try:
                values[name] = check_coverage(_number_or_text(value) if isinstance(value, str) else value)
            except ValidationError as exc:
                problems[f"{where}.{name}"] = exc.errors.get("coverage", str(exc)) if isinstance(exc.errors, dict) \
                    else str(exc)
        elif isinstance(default, bool):
            if isinstance(value, bool):
                values[name] = value
            elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                values[name] = value.strip().lower() in _TRUE
            else:
                problems[f"{where}.{name}"] = f"must be true or false, got {value!r}"[:200]
    if problems:
        raise ValidationError("invalid " + "; ".join(f"{k}: {v}" for k, v in problems.items()), problems)
    return PriceOptions(**values)


def options_from_text(text: str | None, *, where: str) -> dict[str, str]:
    """``name=value`` pairs of a query string or of SageMaker's X-Amzn-SageMaker-Custom-Attributes."""
    out: dict[str, str] = {}
    for part in (text or "").replace(";", "&").replace(",", "&").split("&"):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValidationError(f"{where}: {part!r} is not name=value", {where: "must be name=value pairs"})
        out[name.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Unreadable:
    """A request item that could not even be read (a bad CSV or JSON line): answered in its place."""

    problem: Problem


def csv_header(cells: Sequence[str]) -> list[str] | None:
    """The column names when a CSV line is a header (it names every feature), else None."""
    names = [c.strip().lower() for c in cells]
    return names if set(FEATURES) <= set(names) else None


def csv_stone(cells: Sequence[str], header: Sequence[str] | None) -> Any:
    """One CSV line as a stone: by the header's names, or the 9 features in order.

    Cells that read as finite numbers become floats (so the batch check takes its fast path);
    anything else stays text for check_stone to word. A line of the wrong width is Unreadable.
    """
    if header is not None:
        return {h: _number_or_text(c) if h in _NUMERIC_SET else c
                for h, c in zip(header, cells, strict=False) if h in _FEATURE_SET}
    if len(cells) != len(FEATURES):
        return Unreadable(Problem("row", f"has {len(cells)} fields, expected {len(FEATURES)}: {','.join(FEATURES)}"))
    return {f: _number_or_text(c) if f in _NUMERIC_SET else c for f, c in zip(FEATURES, cells, strict=True)}


_FEATURE_SET = frozenset(FEATURES)
_NUMERIC_SET = frozenset(NUMERIC)


def _number_or_text(cell: str) -> Any:
    try:
        value = float(cell)
    except ValueError:
        return cell
    return value if value - value == 0.0 else cell  # finite: inf - inf and nan - nan are nan


def parse_instances(body: Any, *, max_stones: int | None = MAX_BATCH) -> tuple[list[Any], bool]:
    """The stones of a request body and whether it named a single stone.

    Accepted: one stone object, a list of stones, or ``{"instances": [...]}`` (the Vertex AI
    and serving-image shape), or ``{"stones": [...]}``. A stone is an object, or a list of the
    9 values in ``FEATURES`` order (Vertex's documented instance form). A body with
    ``parameters`` and no instances (what the Vertex client sends for an empty list) holds no
    stone, and is refused as such.
    """
    if isinstance(body, Mapping):
        for key in ENVELOPE_KEYS:
            if key in body:
                items = body[key]
                if not isinstance(items, list):
                    raise ValidationError(f"'{key}' must be a list of stones", {key: "must be a list"})
                return _check_size(items, key, max_stones), False
        if "parameters" in body or not body:
            return _check_size([], "instances", max_stones), False
        return [body], True
    if isinstance(body, list):
        return _check_size(body, "stones", max_stones), False
    raise ValidationError(
        "the body must be a stone object or a list of stones",
        {"body": f"must be an object or a list, got {type(body).__name__}"},
    )


def parse_request(body: Any, *, max_stones: int | None = MAX_BATCH) -> tuple[list[Any], bool, PriceOptions]:
    """(stones, single, options) of a JSON request body: the stones and its ``parameters``."""
    stones, single = parse_instances(body, max_stones=max_stones)
    params = body.get("parameters") if isinstance(body, Mapping) and not single else None
    return stones, single, parse_options(params)


def _check_size(items: list[Any], key: str, max_stones: int | None) -> list[Any]:
    if not items:
        raise ValidationError("no stones to price", {key: "must hold at least one stone"})
    if max_stones is not None and len(items) > max_stones:
        raise ValidationError(
            f"too many stones: {len(items)} (at most {max_stones} a request)",
            {key: f"must hold at most {max_stones} stones, got {len(items)}"},
        )
    return items


def stone_error(problems: Sequence[Any]) -> dict[str, Any]:
    fields_: dict[str, str] = {}
    for p in problems:
        fields_[p.field] = f"{fields_[p.field]}; {p.reason}" if p.field in fields_ else p.reason
    message = "; ".join(f"{f}: {r}" for f, r in fields_.items())
    return {"message": f"invalid stone: {message}", "fields": fields_}


def _check_one(raw: Any) -> tuple[dict[str, Any], list[Problem]]:
    if isinstance(raw, Unreadable):
        return {}, [raw.problem]
    return check_stone(raw)


def validate_stones(stones: Sequence[Any]) -> tuple[list[dict[str, Any] | None], list[dict[str, Any]]]:
    """Per stone its error (None when valid), and the valid stones' typed values, in order.

    One place for the model server and the API alike; ``check_stone`` also refuses a stone
    that is not an object, under the field name ``stone``.
    """
    errors: list[dict[str, Any] | None] = []
    valid: list[dict[str, Any]] = []
    for raw in stones:
        values, problems = _check_one(raw)
        if problems:
            errors.append(stone_error(problems))
        else:
            errors.append(None)
            valid.append(values)
    return errors, valid


# ----------------------------------------------------------------------------- batches

SMALL_BATCH = 16
_CODES: dict[str, dict[str, float]] = {f: {g: float(i) for i, g in enumerate(CATEGORIES[f])} for f in CATEGORIES}
_NUMBER_TYPES = (float, int)


def validate_batch(stones: Sequence[Any]) -> tuple[list[dict[str, Any] | None], Any, list[int]]:
    """``validate_stones`` for a large batch: (errors, encoded rows of the valid stones, their indices).

    The same rules as ``check_stone``, checked on columns with numpy for the stones that are
    plainly well formed (an object whose numbers are numbers and whose grades are spelled as in
    ``CATEGORIES``). Any stone that fails or is irregular here — text for a number, a grade in
    another case, anything out of range — is handed to ``check_stone`` itself, which decides it
    and words its reasons: this pass only ever accepts, never words a refusal, so the two cannot
    disagree on what a valid stone is (tests/unit/test_predict.py checks it on random stones).
    """
    import numpy as np

    n = len(stones)
    if n < SMALL_BATCH:  # a few stones: the per-stone check costs less than setting up the columns
        each, valid = validate_stones(stones)
        rows = np.array([encode(v) for v in valid], dtype=np.float64).reshape(len(valid), len(FEATURES))
        return each, rows, [i for i, e in enumerate(each) if e is None]
    plain = np.fromiter((type(s) is dict for s in stones), dtype=bool, count=n)
    X = np.zeros((n, len(FEATURES)))
    ok = plain.copy()
    for j, f in enumerate(FEATURES):
        column = [s.get(f) if p else None for s, p in zip(stones, plain, strict=True)]
        if f in CATEGORIES:
            codes = _CODES[f]
            X[:, j] = [codes.get(v, -1.0) if type(v) is str else -1.0 for v in column]
            ok &= X[:, j] >= 0
            continue
        typed = np.fromiter((type(v) in _NUMBER_TYPES for v in column), dtype=bool, count=n)
        ok &= typed
        try:
            X[:, j] = [v if t else 0.0 for v, t in zip(column, typed, strict=True)]
        except OverflowError:  # an integer too large for a float: check_stone words it
            X[:, j] = [as_finite(v) if t else None for v, t in zip(column, typed, strict=True)]  # None: NaN
    with np.errstate(all="ignore"):
        ok &= plainly_valid(*(X[:, FEATURES.index(f)] for f in NUMERIC))
    errors: list[dict[str, Any] | None] = [None] * n
    for i in np.flatnonzero(~ok).tolist():
        values, problems = _check_one(stones[i])
        if problems:
            errors[i] = stone_error(problems)
            continue
        X[i] = encode(values)
        ok[i] = True
    valid_at = np.flatnonzero(ok)
    return errors, X[valid_at], valid_at.tolist()


class Predictor:
    """A model with its version, pricing batches of raw stones."""

    def __init__(self, model: Any, version: str) -> None:
        self.model = model
        self.version = version

    def price(self, stones: Sequence[Any], options: PriceOptions | None = None, *,
              reasons: bool | None = None) -> list[dict[str, Any]]:
        """Per stone, in order, ``{"price", "base_price", "reasons"}`` or ``{"error"}``.

        The one place a stone's answer is built. ``reasons`` overrides ``options.reasons``.
        """
        options = options or PriceOptions()
        with_reasons = options.reasons if reasons is None else reasons
        errors, X, valid_at = validate_batch(stones)
        results: list[dict[str, Any]] = [{"error": e} if e is not None else {} for e in errors]
        if not valid_at:
            return results
        import numpy as np

        raw_prices = self.model.predict(X)
        prices = np.round(raw_prices, 2).tolist()
        if with_reasons:
            # Unrounded: the grouped reasons sum the exact values (gemcast.reasons); rounded below.
            explained = self.model.reasons_batch(X)
            # The range, the grouped reasons and the what-if table (gemcast.answer).
            added = extras(self.model, X, raw_prices, explained, coverage=options.coverage, what_if=options.what_if)
            for i, price, answer, more in zip(valid_at, prices, explained, added, strict=True):
                results[i] = {"price": price, "base_price": round(answer["base_price"], 2),
                              "reasons": [{**r, "effect_pct": round(r["effect_pct"], 2),
                                           "effect_usd": round(r["effect_usd"], 2)} for r in answer["reasons"]],
                              **more}
        else:
            added = extras(self.model, X, raw_prices, None, coverage=options.coverage, what_if=options.what_if)
            for i, price, more in zip(valid_at, prices, added, strict=True):
                results[i] = {"price": price, **more}
        return results
