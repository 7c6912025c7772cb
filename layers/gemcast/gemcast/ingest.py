"""Ingesting a raw batch: ``raw/<name>.csv`` -> ``curated/``, ``rejected/``, inventory, snapshot.

The same function runs for the S3 event (preprocess Lambda), the Cloud Storage event
(ingest_upload Cloud Function) and the local stack. It is idempotent: a redelivered event
for an object already ingested (same content hash) changes nothing.

Layout in the data bucket::

    raw/<name>.csv                   the batch as uploaded (kept)
    curated/<name>.csv               its accepted rows
    rejected/<name>.jsonl            its rejected rows, each with its reasons
    rejected/<name>.error.json       when the whole file was unusable, and why
    curated/_ingested/<name>.json    what was ingested from which content (idempotency)
    curated/_snapshot.json           the snapshot id of all curated data together
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gemcast.cleaning import Cleaner, CleanResult, clean_csv
from gemcast.errors import DatasetError, NotFoundError, ValidationError
from gemcast.inventory import Inventory
from gemcast.storage import Storage

logger = logging.getLogger(__name__)

RAW = "raw/"
CURATED = "curated/"
REJECTED = "rejected/"
SNAPSHOT_KEY = "curated/_snapshot.json"


@dataclass
class IngestResult:
    key: str
    status: str  # "ingested", "unchanged", "unusable"
    accepted: int = 0
    rejected: int = 0
    loaded: int = 0
    snapshot_id: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def batch_name(key: str) -> str:
    if not key.startswith(RAW) or not key.lower().endswith(".csv") or key.endswith("/"):
        raise ValidationError(f"not a raw batch: {key!r} (expected raw/<name>.csv)", {"key": "must be raw/<name>.csv"})
    return key[len(RAW):-4]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def curated_snapshot(storage: Storage, fresh: Mapping[str, list[dict[str, Any]]] | None = None,
                     ) -> tuple[str, CleanResult | None]:
    """The snapshot id of every curated batch together (as training computes it).

    ``fresh`` maps the key of a curated CSV just written to the accepted rows it was written
    from: those are added as they are (``Cleaner.add_curated``) instead of read and cleaned again.
    """
    names = [k for k in storage.list(CURATED) if k.endswith(".csv")]
    if not names:
        return "snap-empty", None
    fresh = fresh or {}
    cleaner = Cleaner()
    for name in names:
        source = name[len(CURATED):]
        if name in fresh and cleaner.add_curated(fresh[name], source=source):
            continue
        cleaner.add_csv(storage.read_bytes(name), source=source)
    result = cleaner.finish()
    return result.snapshot_id(), result


def ingest_object(storage: Storage, key: str, inventory: Inventory) -> IngestResult:
    """Clean one raw batch and load its stones; see the module docstring for the layout."""
    name = batch_name(key)
    raw = storage.read_bytes(key)
    digest = hashlib.sha256(raw).hexdigest()
    marker = f"{CURATED}_ingested/{name}.json"
    try:
        done = json.loads(storage.read_bytes(marker))
    except NotFoundError:
        done = None
    if done and done.get("sha256") == digest:
        logger.info("%s was already ingested from the same content; nothing to do", key)
        return IngestResult(key, "unchanged", done.get("accepted", 0), done.get("rejected", 0), 0,
                            done.get("snapshot_id"))
    curated = f"{CURATED}{name}.csv"
    # Each accepted stone goes to the inventory load (a thread of its own) as it is accepted;
    # the curated and rejected files are written and the snapshot worked out while the load
    # waits on its writes. The snapshot and the marker are written only once every stone is
    # loaded; a load that fails raises before them, so a redelivered event loads again.
    accepted: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest") as pool:
        load = pool.submit(inventory.put_stones, iter(accepted.get, None))
        try:
            result = clean_csv(raw, source=key, on_accept=accepted.put)
        except DatasetError as exc:
            accepted.put(None)
            load.result()  # nothing accepted: nothing loaded
            error = {"key": key, "sha256": digest, "error": str(exc), "at": _now()}
            storage.write_bytes(f"{REJECTED}{name}.error.json", json.dumps(error, indent=2).encode(),
                                "application/json")
            logger.warning("%s is unusable: %s", key, exc)
            return IngestResult(key, "unusable", error=str(exc))
        finally:
            accepted.put(None)  # the end of the stones (a second one after an error is never read)
        storage.write_bytes(curated, result.curated_csv().encode(), "text/csv")
        if result.rejected:
            storage.write_bytes(f"{REJECTED}{name}.jsonl", result.rejected_jsonl().encode(), "application/x-ndjson")
        else:
            storage.delete(f"{REJECTED}{name}.jsonl")
        snapshot_of_all = pool.submit(curated_snapshot, storage, {curated: result.accepted})
        loaded = load.result()
        snapshot_id, combined = snapshot_of_all.result()
    snapshot = {
        "snapshot_id": snapshot_id,
        "rows": combined.total if combined else 0,
        "accepted": len(combined.accepted) if combined else 0,
        "batches": sorted(k for k in storage.list(CURATED) if k.endswith(".csv")),
        "updated_at": _now(),
        "last_batch": key,
    }
    storage.write_bytes(SNAPSHOT_KEY, json.dumps(snapshot, indent=2).encode(), "application/json")
    record = {"key": key, "sha256": digest, "accepted": len(result.accepted), "rejected": len(result.rejected),
              "snapshot_id": snapshot_id, "at": _now()}
    storage.write_bytes(marker, json.dumps(record, indent=2).encode(), "application/json")
    logger.info("%s: %d accepted, %d rejected, %d loaded; snapshot %s", key, len(result.accepted),
                len(result.rejected), loaded, snapshot_id)
    return IngestResult(key, "ingested", len(result.accepted), len(result.rejected), loaded, snapshot_id)


def current_snapshot(storage: Storage) -> dict[str, Any] | None:
    try:
        return dict(json.loads(storage.read_bytes(SNAPSHOT_KEY)))
    except NotFoundError:
        return None
