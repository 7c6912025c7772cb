"""Ingest: data/diamonds_large.csv (48,940 rows) cleaned, curated and loaded, on both halves.

- AWS half: the preprocess function, run as the local stack's S3-notification player runs it
  (``python -m gemcast_local.invoke`` against a moto server with the template's resources);
- GCP half: gemcast.ingest with the Firestore inventory (BulkWriter) on the Firestore emulator
  and Cloud Storage on the GCS emulator (skipped, with the reason, without gcloud and Java).

    python -m bench.run ingest
"""

from __future__ import annotations

import os
import time
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
        started = time.perf_counter()
        result = function(event)
        seconds = time.perf_counter() - started
    batch = result["batches"][0]
    return {"rows": batch["accepted"] + batch["rejected"], "loaded": batch["loaded"], "seconds": round(seconds, 2)}


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
        started = time.perf_counter()
        result = ingest_object(gcs, "raw/large.csv", inventory)
        seconds = time.perf_counter() - started
    return {"rows": result.accepted + result.rejected, "loaded": result.loaded, "seconds": round(seconds, 2)}


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
    print_table("Ingest (data/diamonds_large.csv)", rows)
    write_result("ingest", results)
    return results
