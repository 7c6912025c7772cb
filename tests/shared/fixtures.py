"""Session fixtures of the GCP half (a pytest plugin, listed in tests/conftest.py): the
Firebase Auth emulator (one per test session), the Vertex AI jobs stand-in, the serving process
with a small model, and the Cloud Functions under functions-framework. Started only when a test
asks.

Function fixture ``gcp``: the emulators emptied, the data bucket created, recorded jobs
forgotten; the test's own environment points at the emulators too. ``identity`` gives a
signed-in user of the Auth emulator (``identity.user(...)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gemcast_local.gcp_stack import BUCKET, PROJECT, FirebaseAuthEmulator, LocalVertexJobs, ServingProcess
from gemcast_local.servers import FirestoreEmulator, GcsEmulator
from tests.shared.stack import GcpFunctions, publish_tiny_model

PASSWORD = "Parity-Test-2024"


@pytest.fixture(scope="session")
def firebase_auth() -> Iterator[FirebaseAuthEmulator]:
    """One Firebase Auth emulator for the whole session (its start takes a while)."""
    with FirebaseAuthEmulator() as emulator:
        yield emulator


@dataclass
class Identity:
    """Users of the Firebase Auth emulator, signed in through the Identity Toolkit REST API."""

    emulator: FirebaseAuthEmulator

    @property
    def project(self) -> str:
        return self.emulator.project

    def user(self, email: str = "parity@example.com", password: str = PASSWORD) -> dict[str, Any]:
        """Sign ``email`` up if new (beforeCreate runs), then in (beforeSignIn runs): the
        emulator's answer, with ``idToken`` and ``localId`` (the token's subject)."""
        self.emulator.sign_up(email, password, exist_ok=True)
        return self.emulator.sign_in(email, password)

    def id_token(self, email: str = "parity@example.com") -> str:
        return str(self.user(email)["idToken"])


@pytest.fixture
def identity(firebase_auth: FirebaseAuthEmulator, gcp_functions: GcpFunctions) -> Identity:
    """The Auth emulator with these functions' blocking functions registered (they run on every
    sign-up and sign-in; another user of the session's emulator may have registered its own)."""
    firebase_auth.use_blocking_functions(gcp_functions.url("before_create"), gcp_functions.url("before_sign_in"))
    return Identity(firebase_auth)


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
def gcp_functions(firestore_emulator: FirestoreEmulator, gcs_emulator: GcsEmulator,
                  firebase_auth: FirebaseAuthEmulator, vertex_jobs: LocalVertexJobs, serving: ServingProcess,
                  model_registry: str) -> Iterator[GcpFunctions]:
    functions = GcpFunctions(firestore_emulator, gcs_emulator, firebase_auth, vertex_jobs, serving,
                             api_registry=model_registry).start()
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
