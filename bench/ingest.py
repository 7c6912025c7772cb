"""Ingest: data/diamonds_large.csv (48,940 rows) cleaned, curated and loaded, on both halves.

- AWS half: the preprocess function, run as the local stack's S3-notification player runs it
  (``python -m gemcast_local.invoke`` against a moto server with the template's resources);
- GCP half: gemcast.ingest with the Firestore inventory (BulkWriter) on the Firestore emulator
  and Cloud Storage on the GCS emulator (skipped, with the reason, without gcloud and Java).

    python -m bench.run ingest
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import print_table, write_result

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "diamonds_large.csv"


def _aws() -> dict[str, Any]:
    from gemcast_local.invoke import scratch_stack
    from gemcast_local.provision import boto3_factory
    from gemcast_local.runtime import LocalFunction
    from gemcast_local.template import load_template

    template = load_template(REPO / "template.yaml")
    with scratch_stack(template) as (env, values):
        s3 = boto3_factory(env)("s3")
        s3.put_object(Bucket=values["DataBucket"], Key="raw/large.csv", Body=DATA.read_bytes())
        event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": values["DataBucket"], "arn": f"arn:aws:s3:::{values['DataBucket']}"},
            "object": {"key": "raw/large.csv", "size": DATA.stat().st_size}}}]}
        function = LocalFunction.from_template(template, "preprocess", values, env, timeout_s=900)
        with _timed() as figures:
            result = function(event)
    batch = result["batches"][0]
    return {"rows": batch["accepted"] + batch["rejected"], "loaded": batch["loaded"], **figures}


def _gcp() -> dict[str, Any]:
    from gemcast.gcp import FirestoreInventory
    from gemcast.ingest import ingest_object
    from gemcast.storage import GCSStorage
    from gemcast_local.servers import FirestoreEmulator, GcsEmulator, ServerGroup, gcloud_unavailable_reason

    reason = gcloud_unavailable_reason()
    if reason:
        return {"skipped": reason}
    with ServerGroup() as group:
        group.start(FirestoreEmulator(), GcsEmulator())
        os.environ.update(group.env())
        from google.cloud import firestore, storage

        storage.Client().create_bucket("gemcast-bench")
        gcs = GCSStorage("gemcast-bench")
        gcs.write_bytes("raw/large.csv", DATA.read_bytes(), "text/csv")
        inventory = FirestoreInventory(firestore.Client(), "inventory")
        with _timed() as figures:
            result = ingest_object(gcs, "raw/large.csv", inventory)
    return {"rows": result.accepted + result.rejected, "loaded": result.loaded, **figures}


@contextlib.contextmanager
def _timed() -> Iterator[dict[str, float]]:
    """Wall seconds of the block, the CPU seconds this process spent in it (the function's side:
    cleaning, curating, sending; the stand-in's work is in its own process) and the machine's
    load average before it, which says how much of two cores the block could have."""
    figures = {"load_average": round(os.getloadavg()[0], 1)}
    started, cpu, servers = time.perf_counter(), time.process_time(), _descendants_cpu()
    yield figures
    figures.update(seconds=round(time.perf_counter() - started, 2), cpu_s=round(time.process_time() - cpu, 2),
                   stand_in_cpu_s=round(_descendants_cpu() - servers, 2))


def _descendants_cpu() -> float:
    """CPU seconds used so far by the processes below this one (the stand-in servers), from /proc."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)], ticks[int(entry.name)] = int(fields[1]), int(fields[11]) + int(fields[12])
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    below, total = list(children.get(os.getpid(), [])), 0
    while below:
        pid = below.pop()
        total += ticks[pid]
        below += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def run() -> dict[str, Any]:
    results = {"aws_local_stack": _aws(), "gcp_emulators": _gcp()}
    rows = []
    for name, figures in results.items():
        if "skipped" in figures:
            rows.append((f"{name}", "skipped", figures["skipped"]))
            continue
        rate = figures["rows"] / figures["seconds"]
        figures["rows_per_s"] = round(rate)
        rows.append((f"{name}: {figures['rows']:,} rows cleaned, curated, loaded", f"{figures['seconds']:.1f} s",
                     "<= 15 s for 50,000 rows"))
        rows.append((f"{name}: ingest rate", f"{rate:,.0f} rows/s", ">= 3,333 rows/s"))
        rows.append((f"{name}: CPU of the ingesting process / of the stand-ins",
                     f"{figures['cpu_s']:.1f} s / {figures['stand_in_cpu_s']:.1f} s",
                     f"load average {figures['load_average']} on {os.cpu_count()} cores"))
    print_table("Ingest (data/diamonds_large.csv)", rows)
    write_result("ingest", results)
    return results
