"""Loading the inventory on moto: UnprocessedItems are sent again until none is left, a batch
still unprocessed after every attempt is an error (never a silent drop), and what is stored
reads back as the stones loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from gemcast.cleaning import clean_csv
from gemcast.inventory import MAX_ATTEMPTS, DynamoInventory, InventoryWriteError, item_id, plain
from gemcast_local.provision import provision

REPO = Path(__file__).resolve().parents[2]


class HoldingBack:
    """A real client that writes only part of each request and hands the rest back as
    UnprocessedItems, as DynamoDB does when it throttles: every other item of a request, each
    at most ``times`` times; with ``times=None``, every item, always."""

    def __init__(self, client: Any, times: int | None) -> None:
        self.client = client
        self.times = times
        self.held: dict[str, int] = {}

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:  # noqa: N803
        ((table, requests),) = RequestItems.items()
        write, back = [], []
        for position, request in enumerate(requests):
            key = str(request["PutRequest"]["Item"]["carat_key"]["S"])
            if self.times is None or (position % 2 and self.held.get(key, 0) < self.times):
                self.held[key] = self.held.get(key, 0) + 1
                back.append(request)
            else:
                write.append(request)
        if write:
            self.client.batch_write_item(RequestItems={table: write})
        return {"UnprocessedItems": {table: back} if back else {}}


@pytest.fixture
def table(aws_env: dict[str, str], template: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr("time.sleep", lambda s: None)  # the backoff, not its length, is under test
    return provision(template, boto3.client)["InventoryTable"]


def stones(n: int) -> list[dict[str, Any]]:
    return clean_csv((REPO / "data" / "diamonds.csv").read_bytes(), source="diamonds.csv").accepted[:n]


def stored(table: str) -> dict[str, dict[str, Any]]:
    items, kwargs = [], {}
    while True:
        page = boto3.resource("dynamodb").Table(table).scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return {plain(i)["stone_id"]: plain(i) for i in items}
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def as_stored(loaded: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What ``plain`` gives for each stone: its id, then its fields (a whole price as an int)."""
    return {item_id(s): {"stone_id": item_id(s), **s, "price": int(s["price"])} for s in loaded}


def test_unprocessed_items_are_sent_again_until_every_stone_is_stored(table: str) -> None:
    loaded = stones(300)
    client = HoldingBack(boto3.client("dynamodb"), times=2)
    inventory = DynamoInventory(table, boto3.resource("dynamodb"), client=client)

    assert inventory.put_stones(loaded) == 300
    assert len(client.held) == 12 * 12 and max(client.held.values()) == 2  # 12 of each first 25 came back
    assert stored(table) == as_stored(loaded)


def test_a_batch_still_unprocessed_after_every_attempt_is_an_error_naming_how_many(table: str) -> None:
    client = HoldingBack(boto3.client("dynamodb"), times=None)
    inventory = DynamoInventory(table, boto3.resource("dynamodb"), client=client, writers=1)

    with pytest.raises(InventoryWriteError, match=f"unprocessed after {MAX_ATTEMPTS} attempts"):
        inventory.put_stones(stones(25))
    assert all(n == MAX_ATTEMPTS for n in client.held.values())  # sent again after each pause, then given up


def test_the_resource_alone_gives_a_write_client_to_the_same_endpoint(table: str) -> None:
    inventory = DynamoInventory(table, boto3.resource("dynamodb"))
    loaded = stones(60)

    assert inventory.put_stones(loaded) == 60
    assert inventory.put_stones(loaded) == 60  # the same batch again: the same 60 items
    assert stored(table) == as_stored(loaded)
    first = loaded[0]
    near = inventory.similar(first["carat"], first["cut"], first["color"], first["clarity"], 1)
    assert near == [as_stored(loaded)[item_id(first)]]
