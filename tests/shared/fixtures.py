"""Session fixtures of the GCP half (a pytest plugin, listed in tests/conftest.py): the local
Identity Platform issuer, the Vertex AI jobs stand-in, the serving process with a small model,
and the six Cloud Functions under functions-framework. Started only when a test asks.

Function fixture ``gcp``: both emulators emptied, the data bucket created, recorded jobs
forgotten; the test's own environment points at the emulators too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gemcast_local.gcp_stack import BUCKET, PROJECT, LocalIdentity, LocalVertexJobs, ServingProcess
from gemcast_local.servers import FirestoreEmulator, GcsEmulator
from tests.shared.stack import GcpFunctions, publish_tiny_model


@pytest.fixture(scope="session")
def identity() -> Iterator[LocalIdentity]:
    with LocalIdentity(PROJECT) as issuer:
        yield issuer  # type: ignore[misc]


@pytest.fixture(scope="session")
def vertex_jobs() -> Iterator[LocalVertexJobs]:
    with LocalVertexJobs(run=False) as jobs:
        yield jobs  # type: ignore[misc]


@pytest.fixture(scope="session")
def model_registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = (tmp_path_factory.mktemp("registry") / "models").resolve().as_uri()
    publish_tiny_model(uri)
    return uri


@pytest.fixture(scope="session")
def serving(model_registry: str) -> Iterator[ServingProcess]:
    with ServingProcess(model_registry, workers=1) as process:
        yield process


@pytest.fixture(scope="session")
def gcp_functions(firestore_emulator: FirestoreEmulator, gcs_emulator: GcsEmulator, identity: LocalIdentity,
                  vertex_jobs: LocalVertexJobs, serving: ServingProcess) -> Iterator[GcpFunctions]:
    functions = GcpFunctions(firestore_emulator, gcs_emulator, identity, vertex_jobs, serving).start()
    try:
        yield functions
    finally:
        functions.stop()


@dataclass
class GcpTestEnv:
    functions: GcpFunctions
    firestore: Any  # google.cloud.firestore.Client on the emulator
    storage: Any  # google.cloud.storage.Client on the emulator
    bucket: Any

    def url(self, target: str) -> str:
        return self.functions.url(target)


@pytest.fixture
def gcp(gcp_functions: GcpFunctions, firestore_env: dict[str, str], gcs_env: dict[str, str],
        vertex_jobs: LocalVertexJobs) -> GcpTestEnv:
    from google.cloud import firestore, storage  # type: ignore[attr-defined]

    vertex_jobs.jobs.clear()
    gcs = storage.Client(project=PROJECT)
    return GcpTestEnv(gcp_functions, firestore.Client(project=PROJECT), gcs, gcs.create_bucket(BUCKET))


def data_file() -> Path:
    return Path(__file__).resolve().parents[2] / "data" / "diamonds.csv"
