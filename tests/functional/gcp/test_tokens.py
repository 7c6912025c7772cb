"""Production verification of Identity Platform tokens stays strict: with no emulator configured,
only an RS256 token signed by a key of the certs URL, issued for our project, unexpired, with a
subject, is accepted. The Firebase Auth emulator's unsigned tokens are refused there, and
accepted only where FIREBASE_AUTH_EMULATOR_HOST is set."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gemcast.gcp import IdTokenVerifier, TokenError, blocking_audience
from gemcast_local.gcp_stack import FirebaseAuthEmulator
from tests.shared.signing import SigningKey

PROJECT = "demo-gemcast-local"


@pytest.fixture(scope="module")
def key() -> Iterator[SigningKey]:
    signing = SigningKey(PROJECT)
    yield signing
    signing.close()


@pytest.fixture(scope="module")
def emulator_token(firebase_auth: FirebaseAuthEmulator) -> str:
    email = f"strict-{time.monotonic_ns()}@example.com"
    return str(firebase_auth.sign_up(email, "Parity-Test-2024")["idToken"])


def strict(key: SigningKey) -> IdTokenVerifier:
    return IdTokenVerifier(PROJECT, key.certs_url)


def test_a_signed_token_of_the_project_is_accepted(key: SigningKey) -> None:
    assert strict(key).verify(key.id_token("user-1"))["sub"] == "user-1"


@pytest.mark.parametrize("case", ["unsigned", "forged", "expired", "wrong audience"])
def test_without_an_emulator_bad_tokens_are_refused(key: SigningKey, emulator_token: str, case: str) -> None:
    token = {
        "unsigned": emulator_token,  # a real token of the Auth emulator
        "forged": SigningKey(PROJECT, serve=False).id_token("user-1"),  # a key the certs URL does not list
        "expired": key.id_token("user-1", now=time.time() - 7200),
        "wrong audience": key.id_token("user-1", audience="someone-elses-project"),
    }[case]

    with pytest.raises(TokenError):
        strict(key).verify(token)


def test_with_the_emulator_configured_its_tokens_are_accepted(key: SigningKey, emulator_token: str,
                                                              firebase_auth: FirebaseAuthEmulator) -> None:
    verifier = IdTokenVerifier(PROJECT, key.certs_url, emulator_host=firebase_auth.host_port)

    claims = verifier.verify(emulator_token)

    assert claims["sub"] and claims["firebase"]["sign_in_provider"] == "password"
    with pytest.raises(TokenError):  # and nothing signed is taken for one of them
        verifier.verify(key.id_token("user-1"))


def test_blocking_tokens_are_strict_too(key: SigningKey) -> None:
    verifier = IdTokenVerifier(PROJECT, key.certs_url, audience_matcher=blocking_audience(PROJECT))
    record = {"uid": "u-1", "email": "ana@example.com"}

    assert verifier.verify(key.blocking_token("beforeCreate", record))["sub"] == "u-1"
    for audience in ("http://127.0.0.1:8080/", "https://example.org/before_create"):
        with pytest.raises(TokenError):
            verifier.verify(key.blocking_token("beforeCreate", record, audience=audience))
