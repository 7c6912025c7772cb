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

from gemcast.errors import GemcastError, ValidationError
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


# What an item stores besides its two keys. The grades are in ``stone_group`` and the stone id
# ends ``carat_key``, so neither is stored twice: each attribute more is work on every write of
# every stone (serialized, parsed, sized, indexed), for nothing a reader needs (``plain``).
STORED_FIELDS = tuple(f for f in STONE_FIELDS if f not in ("cut", "color", "clarity"))


def to_item(stone: Mapping[str, Any]) -> dict[str, Any]:
    """The stored form of a stone: its two keys and its measurements and price (see ``plain``)."""
    return {
        "stone_group": group_key(stone["cut"], stone["color"], stone["clarity"]),
        "carat_key": f"{carat_prefix(float(stone['carat']))}#{item_id(stone)}",
        **{f: stone[f] for f in STORED_FIELDS},
    }


def stone_of(item: Mapping[str, Any]) -> str:
    """The id of a stored stone: the end of its ``carat_key``."""
    return str(item["carat_key"]).rsplit("#", 1)[1]


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
        seen[stone_of(item)] = plain(item)
    ranked = sorted(seen.values(), key=lambda s: (abs(float(s["carat"]) - carat), float(s["carat"]), s["stone_id"]))
    return ranked[:n]


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A stored item as the stone it holds, JSON-ready (DynamoDB gives Decimals): its id and
    grades read from its keys (an item stored with them as attributes as well reads the same)."""
    cut, color, clarity = str(item["stone_group"]).split("#")
    keys = {"stone_id": stone_of(item), "cut": cut, "color": color, "clarity": clarity}
    out: dict[str, Any] = {}
    for k in ("stone_id", *STONE_FIELDS):
        v = keys[k] if k in keys else item.get(k)
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


BATCH_SIZE = 25  # DynamoDB BatchWriteItem's limit
WRITERS = 4  # batches in flight at once
MAX_ATTEMPTS = 8


class InventoryWriteError(GemcastError):
    """Items DynamoDB left unprocessed after every retry; nothing is dropped silently."""


def dynamodb_item(item: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """An item in DynamoDB's types, each value as boto3's TypeSerializer gives it; a float goes
    as ``Decimal(str(value))``, the number as written (the resource's rule: floats are refused).
    Strings and floats, all an inventory item holds, take a short path to the same answer."""
    from boto3.dynamodb.types import DYNAMODB_CONTEXT, TypeSerializer

    out: dict[str, dict[str, Any]] = {}
    for key, value in item.items():
        if isinstance(value, str):
            out[key] = {"S": value}
        elif isinstance(value, float):
            text = repr(value)
            # Decimal gives back a float's shortest text unchanged unless it has an exponent
            # (1e-05 is 0.00001 there) or is no number at all (inf, nan: refused by Decimal).
            plain_text = "e" not in text and "n" not in text
            out[key] = {"N": text if plain_text else str(DYNAMODB_CONTEXT.create_decimal(text))}
        else:
            out[key] = TypeSerializer().serialize(value)
    return out


class DynamoInventory:
    """The inventory on a DynamoDB table (HASH stone_group, RANGE carat_key).

    Reads go through the table of ``resource``. Writes go through a low-level client (``client``,
    or one made on first use for the resource's region and endpoint, with the default
    credentials as ``boto3.resource`` takes them): the items are turned into DynamoDB's types
    once, here, with boto3's own TypeSerializer, where the resource's client would copy, walk and
    serialize every request again and botocore validate every value against the API model.
    For a 50,000-stone batch those two passes were most of the load's time in the function's
    process; botocore's ``parameter_validation=False`` is documented for that case, and
    DynamoDB still validates every request itself.
    """

    def __init__(self, table_name: str, resource: Any = None, *, client: Any = None,
                 writers: int = WRITERS) -> None:
        if resource is None:
            import boto3

            resource = boto3.resource("dynamodb")
        self.table = resource.Table(table_name)
        self._resource_client = resource.meta.client
        self._client = client
        self.writers = writers

    @property
    def client(self) -> Any:
        """The low-level client the writes go through (made once, on first use)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            base = self._resource_client.meta
            self._client = boto3.client("dynamodb", region_name=base.region_name, endpoint_url=base.endpoint_url,
                                        config=base.config.merge(Config(parameter_validation=False)))
        return self._client

    def put_stones(self, stones: Iterable[Mapping[str, Any]]) -> int:
        """BatchWriteItem in batches of 25, a few in flight at once; UnprocessedItems are sent
        again with a growing pause until none is left (or InventoryWriteError says how many)."""
        from concurrent.futures import ThreadPoolExecutor

        # A key once: BatchWriteItem refuses a batch that names a key twice, and the same key is
        # the same stone at the same price (``item_id``), so a repeat has nothing more to write.
        seen: set[tuple[str, str]] = set()
        batch: list[dict[str, Any]] = []
        client = self.client
        with ThreadPoolExecutor(max_workers=max(1, self.writers), thread_name_prefix="inventory") as pool:
            sent = []
            # Each batch is sent as soon as it is full, while ``stones`` is still being made.
            for stone in stones:
                item = to_item(stone)
                key = (item["stone_group"], item["carat_key"])
                if key in seen:
                    continue
                seen.add(key)
                batch.append(dynamodb_item(item))
                if len(batch) == BATCH_SIZE:
                    sent.append(pool.submit(self._write_batch, client, batch))
                    batch = []
            if batch:
                sent.append(pool.submit(self._write_batch, client, batch))
            for future in sent:
                future.result()
        return len(seen)

    def _write_batch(self, client: Any, items: list[dict[str, Any]]) -> None:
        import time

        requests: dict[str, Any] = {self.table.name: [{"PutRequest": {"Item": item}} for item in items]}
        for attempt in range(MAX_ATTEMPTS):
            requests = client.batch_write_item(RequestItems=requests).get("UnprocessedItems") or {}
            if not requests:
                return
            time.sleep(min(2.0, 0.05 * 2 ** attempt))  # DynamoDB's advice: back off, then resend
        left = sum(len(v) for v in requests.values())
        raise InventoryWriteError(f"{left} stones of a batch were still unprocessed after {MAX_ATTEMPTS} attempts")

    def similar(self, carat: float, cut: str, color: str, clarity: str, n: int) -> list[dict[str, Any]]:
        from boto3.dynamodb.conditions import Key

        group = Key("stone_group").eq(group_key(cut, color, clarity))
        pivot = carat_prefix(carat)
        above = self.table.query(KeyConditionExpression=group & Key("carat_key").gte(pivot),
                                 ScanIndexForward=True, Limit=n)["Items"]
        below = self.table.query(KeyConditionExpression=group & Key("carat_key").lt(pivot),
                                 ScanIndexForward=False, Limit=n)["Items"]
        return nearest(carat, above, below, n)
