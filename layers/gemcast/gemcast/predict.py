"""Pricing stones with a loaded model: validation, batching, prices and reasons.

Shared by the serving process (SageMaker and Vertex AI contracts), the CLI and the local
stack. A batch is priced in one vectorized call; an invalid stone gets its own error and
does not fail the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gemcast.answer import DEFAULT_COVERAGE, extras
from gemcast.errors import ValidationError
from gemcast.schema import check_stone, encode

MAX_BATCH = 1000


def parse_instances(body: Any) -> tuple[list[Any], bool]:
    """The stones of a request body and whether it named a single stone.

    Accepted: one stone object, a list of stones, or ``{"instances": [...]}`` (the Vertex AI
    and serving-image shape), or ``{"stones": [...]}``.
    """
    if isinstance(body, Mapping):
        for key in ("instances", "stones"):
            if key in body:
                items = body[key]
                if not isinstance(items, list):
                    raise ValidationError(f"'{key}' must be a list of stones", {key: "must be a list"})
                return _check_size(items, key), False
        return [body], True
    if isinstance(body, list):
        return _check_size(body, "stones"), False
    raise ValidationError(
        "the body must be a stone object or a list of stones",
        {"body": f"must be an object or a list, got {type(body).__name__}"},
    )


def _check_size(items: list[Any], key: str) -> list[Any]:
    if not items:
        raise ValidationError("no stones to price", {key: "must hold at least one stone"})
    if len(items) > MAX_BATCH:
        raise ValidationError(
            f"too many stones: {len(items)} (at most {MAX_BATCH} a request)",
            {key: f"must hold at most {MAX_BATCH} stones, got {len(items)}"},
        )
    return items


def stone_error(problems: Sequence[Any]) -> dict[str, Any]:
    fields: dict[str, str] = {}
    for p in problems:
        fields[p.field] = f"{fields[p.field]}; {p.reason}" if p.field in fields else p.reason
    message = "; ".join(f"{f}: {r}" for f, r in fields.items())
    return {"message": f"invalid stone: {message}", "fields": fields}


def validate_stones(stones: Sequence[Any]) -> tuple[list[dict[str, Any] | None], list[dict[str, Any]]]:
    """Per stone its error (None when valid), and the valid stones' typed values, in order.

    One place for the model server and the API alike; ``check_stone`` also refuses a stone
    that is not an object, under the field name ``stone``.
    """
    errors: list[dict[str, Any] | None] = []
    valid: list[dict[str, Any]] = []
    for raw in stones:
        values, problems = check_stone(raw)
        if problems:
            errors.append(stone_error(problems))
        else:
            errors.append(None)
            valid.append(values)
    return errors, valid


class Predictor:
    """A model with its version, pricing batches of raw stones."""

    def __init__(self, model: Any, version: str) -> None:
        self.model = model
        self.version = version

    def price(self, stones: Sequence[Any], *, reasons: bool = True, coverage: int = DEFAULT_COVERAGE,
              what_if: bool = False) -> list[dict[str, Any]]:
        errors, valid = validate_stones(stones)
        results: list[dict[str, Any]] = [{"error": e} if e is not None else {} for e in errors]
        valid_rows = [encode(values) for values in valid]
        valid_at = [i for i, e in enumerate(errors) if e is None]
        if valid_rows:
            # numpy only here: the Lambda proxy shares this module's validation without numpy.
            import numpy as np

            X = np.asarray(valid_rows, dtype=float)
            prices = self.model.predict(X)
            explained = self.model.reasons_batch(X) if reasons else None
            # The range, the grouped reasons and the what-if table (gemcast.answer).
            added = extras(self.model, X, prices, explained, valid, coverage=coverage, what_if=what_if)
            for j, i in enumerate(valid_at):
                out: dict[str, Any] = {"price": round(float(prices[j]), 2)}
                if explained is not None:
                    out["base_price"] = round(float(explained[j]["base_price"]), 2)
                    out["reasons"] = [
                        {**r, "effect_pct": round(r["effect_pct"], 2), "effect_usd": round(r["effect_usd"], 2)}
                        for r in explained[j]["reasons"]
                    ]
                out.update(added[j])
                results[i] = out
        return results
