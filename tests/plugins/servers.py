"""Fixtures that start the stand-in servers once per session and point each test at them.

Session fixtures (the process): ``moto_server``, ``firestore_emulator``, ``gcs_emulator``.
Function fixtures (the environment, and a clean slate): ``aws_env``, ``firestore_env``,
``gcs_env`` set the variables of ``server.env()`` with monkeypatch and empty the server
first, so a test sees only what it created. Each returns the dict it set.

A server is started only when a test asks for it; the Firestore emulator is skipped, with the
reason, only when gcloud or java is missing. A server that fails to start is an error, not a skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gemcast_local.servers import (
    FirestoreEmulator,
    GcsEmulator,
    MotoServer,
    exit_on_sigterm,
    gcloud_unavailable_reason,
)

# Real credentials or profiles in the developer's shell must never reach a test.
_AWS_LEAKS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE")
_GCP_LEAKS = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CORE_PROJECT")


def pytest_sessionstart(session: pytest.Session) -> None:
    # A CI cancel sends SIGTERM; unwind so the session fixtures stop their servers.
    exit_on_sigterm()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[FirestoreEmulator]:
    reason = gcloud_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with FirestoreEmulator() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    with GcsEmulator() as server:
        yield server


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """boto3 talks to moto: endpoint, fake keys, region. Moto is reset before the test."""
    moto_server.reset()
    for name in _AWS_LEAKS:
        monkeypatch.delenv(name, raising=False)
    env = moto_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def firestore_env(firestore_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """google-cloud-firestore talks to the emulator; the project's documents are deleted first."""
    firestore_emulator.clear()
    for name in _GCP_LEAKS:
        monkeypatch.delenv(name, raising=False)
    env = firestore_emulator.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def gcs_env(gcs_emulator: GcsEmulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """google-cloud-storage talks to the emulator; every bucket and object is deleted first."""
    gcs_emulator.clear()
    for name in _GCP_LEAKS:
        monkeypatch.delenv(name, raising=False)
    env = gcs_emulator.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
