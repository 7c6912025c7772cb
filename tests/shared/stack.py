"""Test support shared by tests/functional/gcp and tests/shared: a small model in a registry,
the serving process, the Cloud Functions under functions-framework (on the Firestore, Cloud
Storage and Firebase Auth emulators), and requests built from the events/gcp/ fixtures.

The model is built by hand (one tree on carat and clarity), not trained: the API's behaviour
does not depend on its quality, and training would cost minutes on two busy cores.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import requests

from gemcast.model import FORMAT, FORMAT_VERSION, KIND_TREES, TARGET, metadata_array, save_model
from gemcast.registry import ModelPackage, Registry
from gemcast.schema import FEATURES
from gemcast_local.gcp_stack import (
    ENTRY_POINTS,
    FirebaseAuthEmulator,
    FunctionServer,
    LocalVertexJobs,
    ServingProcess,
    function_env,
)
from gemcast_local.servers import FirestoreEmulator, GcsEmulator, ServerGroup

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
GCP_EVENTS = EVENTS / "gcp"
MODEL_VERSION = "20240501T100000Z-test01"
SNAPSHOT_ID = "snap-test-model"


def tiny_model_bytes() -> bytes:
    """Two splits: carat <= 1.0, then clarity code <= 3; prices from $1,500 to $12,000."""
    carat, clarity = FEATURES.index("carat"), FEATURES.index("clarity")
    arrays: dict[str, Any] = {
        "tree_feature": np.array([[carat, clarity, -1, -1, -1]], np.int32),
        "tree_threshold": np.array([[1.0, 3.0, 0.0, 0.0, 0.0]]),
        "tree_left": np.array([[1, 3, -1, -1, -1]], np.int32),
        "tree_right": np.array([[2, 4, -1, -1, -1]], np.int32),
        "tree_value": np.array([[0.0, 0.0, math.log(12000), math.log(1500), math.log(3000)]]),
        "tree_cover": np.array([[100.0, 70.0, 30.0, 30.0, 40.0]]),
        "tree_weight": np.array([1.0]),
        "tree_float32": np.array([False]),
        "bias": np.array(0.0),
        "__meta__": metadata_array({"format": FORMAT, "format_version": FORMAT_VERSION, "kind": KIND_TREES,
                                    "feature_names": list(FEATURES), "target": TARGET, "n_trees": 1}),
    }
    return save_model(arrays)


def publish_tiny_model(registry_uri: str) -> str:
    registry = Registry(registry_uri)
    registry.publish(ModelPackage(
        files={"model.npz": tiny_model_bytes(),
               "model_card.md": b"# Model card\n\nOne tree on carat and clarity, for tests.\n",
               "pred_vs_actual.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'},
        manifest={"version": MODEL_VERSION, "created": "2024-05-01T10:00:00Z",
                  "data": {"snapshot_id": SNAPSHOT_ID, "rows": 100, "accepted": 99, "rejected": 1,
                           "train_rows": 80, "holdout_rows": 19},
                  "metrics": {"holdout": {"mae": 500.0, "mape": 12.5}},
                  "gate": {"promote": True, "metric": "mae", "candidate": 500.0, "champion": None,
                           "margin": 0.0, "reason": "no champion yet"},
                  "model": {"kind": KIND_TREES}},
    ))
    registry.promote(MODEL_VERSION, reason="test fixture")
    return MODEL_VERSION


def gcp_event(name: str) -> dict[str, Any]:
    return dict(json.loads((GCP_EVENTS / f"{name}.json").read_text()))


def call_function(url: str, fixture: str | Mapping[str, Any], token: str | None = None,
                  **overrides: Any) -> requests.Response:
    """Send the HTTP request of an events/gcp/ fixture to a function (``{{ID_TOKEN}}`` filled in;
    the header dropped when ``token`` is None)."""
    spec = dict(gcp_event(fixture) if isinstance(fixture, str) else fixture)
    spec.update(overrides)
    headers = {}
    for key, value in spec.get("headers", {}).items():
        if "{{ID_TOKEN}}" in value:
            if token is None:
                continue
            value = value.replace("{{ID_TOKEN}}", token)
        headers[key] = value
    body = spec.get("body")
    return requests.request(spec["method"], url + spec.get("path", "/"), headers=headers,
                            params=spec.get("query"), data=body.encode() if isinstance(body, str) else body,
                            timeout=60)


class GcpFunctions:
    """The entry points as processes, on the emulators and the serving process; the Firebase
    Auth emulator calls the blocking functions, as Identity Platform does."""

    def __init__(self, firestore: FirestoreEmulator, gcs: GcsEmulator, identity: FirebaseAuthEmulator,
                 jobs: LocalVertexJobs, serving: ServingProcess, *, api_registry: str | None = None) -> None:
        self.identity = identity
        self.jobs = jobs
        self.serving = serving
        env = {**firestore.env(), **gcs.env(), **identity.env()}
        self.env = env
        self._group = ServerGroup()
        self.servers: dict[str, FunctionServer] = {}
        for target in ENTRY_POINTS:
            endpoint = jobs.url if target == "trigger_training" else serving.url
            # The API reads the model the serving process serves (and the AWS side's registry).
            overrides = {"REGISTRY_URI": api_registry} if target == "api" and api_registry else {}
            self.servers[target] = FunctionServer(
                target, env=function_env(emulators=env, vertex_api_endpoint=endpoint,
                                         identity_project=identity.project, **overrides))

    def url(self, target: str) -> str:
        return self.servers[target].url

    def start(self) -> GcpFunctions:
        self._group.start(*self.servers.values())
        self.identity.use_blocking_functions(self.url("before_create"), self.url("before_sign_in"))
        return self

    def stop(self) -> None:
        self._group.stop()

    def logs(self, target: str) -> str:
        return self.servers[target].last_output()


def serving_process(registry_uri: str) -> Iterator[ServingProcess]:
    with ServingProcess(registry_uri, workers=1) as process:
        yield process
