"""Ingest hands each accepted stone to the inventory load while cleaning goes on; the snapshot
is written only after every stone is loaded, and a load that fails leaves no snapshot or marker."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from gemcast.cleaning import clean_csv
from gemcast.ingest import SNAPSHOT_KEY, ingest_object
from gemcast.storage import FileStorage

DATA = Path(__file__).resolve().parents[2] / "data"


class Recording:
    """An inventory that records what it was given and when, and may fail after ``fail_after``."""

    def __init__(self, storage: FileStorage, fail_after: int | None = None) -> None:
        self.storage, self.fail_after = storage, fail_after
        self.stones: list[dict[str, Any]] = []
        self.snapshot_seen_while_loading = False
        self.thread: threading.Thread | None = None

    def put_stones(self, stones: Iterable[Mapping[str, Any]]) -> int:
        self.thread = threading.current_thread()
        for stone in stones:
            self.stones.append(dict(stone))
            self.snapshot_seen_while_loading |= self.storage.exists(SNAPSHOT_KEY)
            if self.fail_after is not None and len(self.stones) >= self.fail_after:
                raise RuntimeError("the table is gone")
        self.snapshot_seen_while_loading |= self.storage.exists(SNAPSHOT_KEY)
        return len(self.stones)

    def similar(self, *args: Any) -> list[dict[str, Any]]:
        return []


def test_every_accepted_stone_is_loaded_in_order_before_the_snapshot(tmp_path: Path) -> None:
    raw = (DATA / "diamonds.csv").read_bytes()
    storage = FileStorage(tmp_path)
    storage.write_bytes("raw/b.csv", raw, "text/csv")
    inventory = Recording(storage)
    result = ingest_object(storage, "raw/b.csv", inventory)
    expected = clean_csv(raw, source="raw/b.csv").accepted
    assert inventory.stones == expected and result.loaded == len(expected) == result.accepted
    assert inventory.thread is not threading.main_thread()
    assert not inventory.snapshot_seen_while_loading and storage.exists(SNAPSHOT_KEY)


def test_a_load_that_fails_leaves_no_snapshot_and_no_marker(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.write_bytes("raw/b.csv", (DATA / "diamonds.csv").read_bytes(), "text/csv")
    with pytest.raises(RuntimeError, match="the table is gone"):
        ingest_object(storage, "raw/b.csv", Recording(storage, fail_after=10))
    assert not storage.exists(SNAPSHOT_KEY) and not storage.exists("curated/_ingested/b.json")
    # The event delivered again loads every stone.
    again = Recording(storage)
    assert ingest_object(storage, "raw/b.csv", again).status == "ingested"
    assert len(again.stones) == len(clean_csv((DATA / "diamonds.csv").read_bytes()).accepted)


def test_an_unusable_file_loads_nothing(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.write_bytes("raw/b.csv", b"carat,cut\n1,Ideal\n", "text/csv")
    inventory = Recording(storage)
    assert ingest_object(storage, "raw/b.csv", inventory).status == "unusable"
    assert inventory.stones == [] and storage.exists("rejected/b.error.json")
