"""How the inventory writers send stones: DynamoDB items in the types boto3 would give them,
Firestore's BulkWriter at the rate its rules allow, and a write that keeps failing raised."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer

from gemcast.cleaning import clean_csv
from gemcast.errors import GemcastError
from gemcast.gcp import RAMP_START_OPS, UNCAPPED_OPS, WRITE_ATTEMPTS, FirestoreInventory, write_pb
from gemcast.inventory import dynamodb_item, item_id, plain, to_item

DATA = Path(__file__).resolve().parents[2] / "data"


def test_dynamodb_items_are_what_the_resource_would_send() -> None:
    stones = clean_csv((DATA / "diamonds.csv").read_bytes()).accepted
    serialize = TypeSerializer().serialize
    odd = [{**stones[0], "carat": 1e-05, "price": 1e16, "x": 0.1 + 0.2},
           {**stones[0], "carat": -0.0, "price": 123456789012345.67, "x": 1e-120, "y": 9.99e125,
            "z": 100.0, "depth": 0.001, "table": 1234567890123456789.0}]
    for stone in [*stones, *odd]:
        item = to_item(stone)
        resource_form = {k: serialize(Decimal(str(v)) if isinstance(v, float) else v) for k, v in item.items()}
        assert dynamodb_item(item) == resource_form
    assert dynamodb_item({"n": 3, "flag": True, "none": None}) == {"n": {"N": "3"}, "flag": {"BOOL": True},
                                                                   "none": {"NULL": True}}


def test_an_item_stores_each_fact_once_and_reads_back_as_its_stone() -> None:
    stone = clean_csv((DATA / "diamonds.csv").read_bytes()).accepted[0]
    item = to_item(stone)
    assert sorted(item) == sorted(["stone_group", "carat_key", "carat", "depth", "table", "x", "y", "z", "price"])
    assert plain(item) == {"stone_id": item_id(stone), **stone}
    # An item written with the grades and the id as attributes too (before) reads the same.
    older = {**item, "stone_id": item_id(stone), "cut": stone["cut"], "color": stone["color"],
             "clarity": stone["clarity"]}
    assert plain(older) == plain(item)
    assert list(plain(item)) == ["stone_id", "carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z",
                                 "price"]


class Failure:
    def __init__(self, doc_id: str, attempts: int) -> None:
        self.attempts = attempts
        self.message = "UNAVAILABLE"
        self.operation = type("Op", (), {"reference": type("Ref", (), {"id": doc_id})()})()


class Writer:
    """BulkWriter's contract as put_stones uses it: set, on_write_error, close; ``failing``
    documents fail that many times (None: every time) and are retried while the handler says so."""

    def __init__(self, options: Any, failing: dict[str, int | None]) -> None:
        self.options = options
        self.failing = failing
        self.written: list[str] = []
        self.pending: list[str] = []

    def on_write_error(self, handler: Any) -> None:
        self.handler = handler

    def set(self, reference: Any, data: dict[str, Any]) -> None:
        self.pending.append(reference.id)

    def close(self) -> None:
        for doc_id in self.pending:
            attempts = 0
            while True:
                attempts += 1
                fails = self.failing.get(doc_id, 0)
                if fails is None or attempts <= fails:
                    if self.handler(Failure(doc_id, attempts), self):
                        continue
                    break
                self.written.append(doc_id)
                break


class Client:
    def __init__(self, failing: dict[str, int | None] | None = None) -> None:
        self.failing = failing or {}
        self.writers: list[Writer] = []

    def collection(self, name: str) -> Any:
        return type("Collection", (), {"document": lambda _, doc_id: type("Ref", (), {"id": doc_id})()})()

    def bulk_writer(self, options: Any) -> Writer:
        self.writers.append(Writer(options, self.failing))
        return self.writers[-1]


def test_firestore_starts_at_500_a_second_and_may_ramp_up_by_the_500_50_5_rule(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    options = FirestoreInventory(Client(), "inventory").writer_options()
    assert (options.initial_ops_per_second, options.max_ops_per_second) == (RAMP_START_OPS, UNCAPPED_OPS)
    assert options.mode.name == "parallel"


def test_the_emulator_is_not_ramped_up_and_a_rate_given_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:8080")
    options = FirestoreInventory(Client(), "inventory").writer_options()
    assert options.initial_ops_per_second == options.max_ops_per_second == UNCAPPED_OPS
    given = FirestoreInventory(Client(), "inventory", ops_per_second=200).writer_options()
    assert given.initial_ops_per_second == given.max_ops_per_second == 200


def test_failed_firestore_writes_are_retried_and_one_that_keeps_failing_is_raised(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FirestoreInventory, "new_writer", lambda self: self.client.bulk_writer(self.writer_options()))
    stones = clean_csv((DATA / "diamonds.csv").read_bytes()).accepted[:3]
    ids = [item_id(s) for s in stones]

    client = Client({ids[0]: WRITE_ATTEMPTS - 1})
    assert FirestoreInventory(client, "inventory").put_stones(stones) == 3
    assert sorted(client.writers[0].written) == sorted(ids)

    client = Client({ids[1]: None})
    with pytest.raises(GemcastError, match=f"1 stones could not be written to Firestore, e.g. {ids[1]}"):
        FirestoreInventory(client, "inventory").put_stones(stones)


def test_the_firestore_writes_made_here_are_the_librarys_own_to_the_byte() -> None:
    from google.cloud.firestore_v1 import _helpers

    stones = clean_csv((DATA / "diamonds.csv").read_bytes()).accepted
    path = "projects/p/databases/(default)/documents/inventory/"
    odd = {"n": 3, "big": 2**63 - 1, "small": -2**63, "tiny": 5e-324, "text": "é#ü", "empty": ""}
    for item in [*(to_item(s) for s in stones[:500]), odd]:
        ours = write_pb(path + "one", item)
        assert ours.SerializeToString(deterministic=True) == \
            _helpers.pbs_for_set_no_merge(path + "one", item)[0]._pb.SerializeToString(deterministic=True)
    # Anything else is left to the library's own encoding.
    for other in ({"flag": True}, {"none": None}, {"huge": 2**63}, {"list": [1.0]}, {"map": {"a": 1.0}}):
        assert write_pb(path + "one", other) is None
