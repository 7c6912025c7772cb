"""The inventory of stones for "n similar stones": same cut, color and clarity, nearest carat.

Key design (DynamoDB table and Firestore collection alike): the partition is the grade group
``"<cut>#<color>#<clarity>"``; within it, stones sort by ``carat_key`` =
``"<carat, zero-padded>#<stone id>"``. The n nearest carats are found with two bounded range
queries around the asked carat (n at or above it ascending, n below it descending), never a
scan, then merged by distance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from gemcast.errors import ValidationError
from gemcast.schema import CATEGORIES, RANGES, stone_id

MAX_N = 50
DEFAULT_N = 5
STONE_FIELDS = ("carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z", "price")


def group_key(cut: str, color: str, clarity: str) -> str:
    return f"{cut}#{color}#{clarity}"


def carat_prefix(carat: float) -> str:
    return f"{carat:09.4f}"


def item_id(stone: Mapping[str, Any]) -> str:
    """Same stone at the same price, same id: loading a batch twice changes nothing."""
    return hashlib.sha256(f"{stone_id(stone)}|{float(stone['price']):g}".encode()).hexdigest()[:16]


def to_item(stone: Mapping[str, Any]) -> dict[str, Any]:
    sid = item_id(stone)
    return {
        "stone_group": group_key(stone["cut"], stone["color"], stone["clarity"]),
        "carat_key": f"{carat_prefix(float(stone['carat']))}#{sid}",
        "stone_id": sid,
        **{f: stone[f] for f in STONE_FIELDS},
    }


def parse_query(params: Mapping[str, Any] | None) -> tuple[float, str, str, str, int]:
    """Check the query of /v1/diamonds/similar; every bad parameter is named at once."""
    params = params or {}
    errors: dict[str, str] = {}
    carat: float | None = None
    raw_carat = params.get("carat")
    if raw_carat in (None, ""):
        errors["carat"] = "is missing"
    else:
        try:
            carat = float(str(raw_carat))
            low, high = RANGES["carat"]
            if not low <= carat <= high:
                errors["carat"] = f"must be between {low:g} and {high:g} ct, got {raw_carat}"
        except ValueError:
            errors["carat"] = f"must be a number, got {raw_carat!r}"
    grades: dict[str, str] = {}
    for field, allowed in CATEGORIES.items():
        value = params.get(field)
        if value in (None, ""):
            errors[field] = "is missing"
            continue
        match = next((g for g in allowed if g.lower() == str(value).strip().lower()), None)
        if match is None:
            errors[field] = f"unknown {field} {value!r}: must be one of {', '.join(allowed)}"
        else:
            grades[field] = match
    n = DEFAULT_N
    raw_n = params.get("n")
    if raw_n not in (None, ""):
        try:
            n = int(str(raw_n))
            if not 1 <= n <= MAX_N:
                errors["n"] = f"must be between 1 and {MAX_N}, got {raw_n}"
        except ValueError:
            errors["n"] = f"must be a whole number, got {raw_n!r}"
    if errors:
        raise ValidationError("invalid query: " + "; ".join(f"{k}: {v}" for k, v in errors.items()), errors)
    assert carat is not None
    return carat, grades["cut"], grades["color"], grades["clarity"], n


def nearest(carat: float, above: Sequence[Mapping[str, Any]], below: Sequence[Mapping[str, Any]],
            n: int) -> list[dict[str, Any]]:
    """Merge the two range-query results: the n stones nearest in carat, nearest first."""
    seen: dict[str, dict[str, Any]] = {}
    for item in [*above, *below]:
        seen[str(item["stone_id"])] = plain(item)
    ranked = sorted(seen.values(), key=lambda s: (abs(float(s["carat"]) - carat), float(s["carat"]), s["stone_id"]))
    return ranked[:n]


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A stored item as JSON-ready values (DynamoDB gives Decimals)."""
    out: dict[str, Any] = {}
    for k in ("stone_id", *STONE_FIELDS):
        v = item.get(k)
        if isinstance(v, Decimal):
            v = int(v) if k == "price" and v == v.to_integral_value() else float(v)
        out[k] = v
    return out


def similar_response(carat: float, cut: str, color: str, clarity: str, n: int,
                     stones: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "query": {"carat": carat, "cut": cut, "color": color, "clarity": clarity, "n": n},
        "count": len(stones),
        "stones": stones,
    }
    if len(stones) < n:
        body["note"] = (
            f"only {len(stones)} stone{'s' if len(stones) != 1 else ''} of {cut} cut, color {color}, "
            f"clarity {clarity} in the data; fewer than the {n} asked"
        )
    return body


class Inventory(Protocol):
    def put_stones(self, stones: Iterable[Mapping[str, Any]]) -> int: ...

    def similar(self, carat: float, cut: str, color: str, clarity: str, n: int) -> list[dict[str, Any]]: ...


class DynamoInventory:
    """The inventory on a DynamoDB table (HASH stone_group, RANGE carat_key)."""

    def __init__(self, table_name: str, resource: Any = None) -> None:
        if resource is None:
            import boto3

            resource = boto3.resource("dynamodb")
        self.table = resource.Table(table_name)

    def put_stones(self, stones: Iterable[Mapping[str, Any]]) -> int:
        count = 0
        # batch_writer retries unprocessed items itself and de-duplicates keys in a batch.
        with self.table.batch_writer(overwrite_by_pkeys=["stone_group", "carat_key"]) as batch:
            for stone in stones:
                item = {k: (Decimal(str(v)) if isinstance(v, float) else v) for k, v in to_item(stone).items()}
                batch.put_item(Item=item)
                count += 1
        return count

    def similar(self, carat: float, cut: str, color: str, clarity: str, n: int) -> list[dict[str, Any]]:
        from boto3.dynamodb.conditions import Key

        group = Key("stone_group").eq(group_key(cut, color, clarity))
        pivot = carat_prefix(carat)
        above = self.table.query(KeyConditionExpression=group & Key("carat_key").gte(pivot),
                                 ScanIndexForward=True, Limit=n)["Items"]
        below = self.table.query(KeyConditionExpression=group & Key("carat_key").lt(pivot),
                                 ScanIndexForward=False, Limit=n)["Items"]
        return nearest(carat, above, below, n)
