"""The web app's settings: every environment variable name, read once into a frozen object.

The web app deploys on its own (Elastic Beanstalk, App Engine), so its variables live here
rather than in gemcast.config; the names match what template.yaml and app.yaml set.
An explicit argument beats the environment, which beats a default; ``from_env`` names every
missing or malformed variable in one ``WebConfigError``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

API_URL = "API_URL"
AUTH_PROVIDER = "AUTH_PROVIDER"
USER_POOL_ID = "USER_POOL_ID"
USER_POOL_CLIENT_ID = "USER_POOL_CLIENT_ID"
AWS_REGION = "AWS_REGION"
AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"
IDENTITY_API_KEY = "IDENTITY_API_KEY"
# Only where the Firebase Auth emulator stands in for Identity Platform (the local GCP half).
FIREBASE_AUTH_EMULATOR_HOST = "FIREBASE_AUTH_EMULATOR_HOST"
SECRET_KEY = "SECRET_KEY"
COOKIE_SECURE = "COOKIE_SECURE"
TRUST_PROXY = "TRUST_PROXY"
SESSION_IDLE_MINUTES = "SESSION_IDLE_MINUTES"
API_TIMEOUT_S = "API_TIMEOUT_S"
SIMILAR_N = "SIMILAR_N"
SIGNIN_ACCOUNT_FAILURES = "SIGNIN_ACCOUNT_FAILURES"
SIGNIN_ADDRESS_FAILURES = "SIGNIN_ADDRESS_FAILURES"
SIGNIN_WINDOW_MINUTES = "SIGNIN_WINDOW_MINUTES"

PROVIDERS = ("cognito", "identity_platform")
COOKIE_MODES = ("auto", "always", "never")


class WebConfigError(Exception):
    """A setting of the web app is missing or malformed; the message names every bad variable."""


@dataclass(frozen=True)
class WebSettings:
    api_url: str
    auth_provider: str = "cognito"
    user_pool_id: str = ""
    user_pool_client_id: str = ""
    region: str = "us-east-1"
    identity_api_key: str = ""
    firebase_auth_emulator_host: str = ""
    # Signs the session cookies (an anonymous visitor's session *is* its cookie). A key made at
    # start loses, on a restart, only what the memory of signed-in sessions loses anyway; set it
    # to keep open sign-in forms valid across restarts and when several processes serve the app.
    secret_key: str = ""
    cookie_secure: str = "auto"
    trust_proxy: bool = True
    session_idle_minutes: int = 120
    api_timeout_s: float = 10.0
    similar_n: int = 5
    # Wrong passwords allowed per account and per client address within the window.
    signin_account_failures: int = 5
    signin_address_failures: int = 20
    signin_window_minutes: int = 15

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> WebSettings:
        env = os.environ if environ is None else environ
        problems: list[str] = []
        values: dict[str, Any] = {}

        def read(name: str, var: str, parse: Any = str) -> None:
            if name in overrides:
                values[name] = overrides[name]
                return
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                return
            try:
                values[name] = parse(raw.strip())
            except ValueError as exc:
                problems.append(f"{var}: {exc}")

        read("api_url", API_URL, lambda v: v.rstrip("/"))
        read("auth_provider", AUTH_PROVIDER, str.lower)
        read("user_pool_id", USER_POOL_ID)
        read("user_pool_client_id", USER_POOL_CLIENT_ID)
        read("region", AWS_DEFAULT_REGION)
        read("region", AWS_REGION)  # Lambda-style name wins when both are set
        read("identity_api_key", IDENTITY_API_KEY)
        read("firebase_auth_emulator_host", FIREBASE_AUTH_EMULATOR_HOST)
        read("secret_key", SECRET_KEY)
        read("cookie_secure", COOKIE_SECURE, str.lower)
        read("trust_proxy", TRUST_PROXY, _as_bool)
        read("session_idle_minutes", SESSION_IDLE_MINUTES, _positive_int)
        read("api_timeout_s", API_TIMEOUT_S, _positive_float)
        read("similar_n", SIMILAR_N, _positive_int)
        read("signin_account_failures", SIGNIN_ACCOUNT_FAILURES, _positive_int)
        read("signin_address_failures", SIGNIN_ADDRESS_FAILURES, _positive_int)
        read("signin_window_minutes", SIGNIN_WINDOW_MINUTES, _positive_int)

        if not values.get("api_url"):
            problems.append(f"{API_URL}: required but not set (the gemcast API base URL)")
        elif not str(values["api_url"]).startswith(("http://", "https://")):
            problems.append(f"{API_URL}: must start with http:// or https://, got {values['api_url']!r}")
        provider = values.get("auth_provider", "cognito")
        if provider not in PROVIDERS:
            problems.append(f"{AUTH_PROVIDER}: must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        elif provider == "cognito":
            for name, var in (("user_pool_id", USER_POOL_ID), ("user_pool_client_id", USER_POOL_CLIENT_ID)):
                if not values.get(name):
                    problems.append(f"{var}: required but not set (Cognito sign-in)")
        elif not values.get("identity_api_key"):
            problems.append(f"{IDENTITY_API_KEY}: required but not set (Identity Platform sign-in)")
        if values.get("cookie_secure", "auto") not in COOKIE_MODES:
            problems.append(f"{COOKIE_SECURE}: must be one of {', '.join(COOKIE_MODES)}")
        if problems:
            raise WebConfigError("invalid web app settings: " + "; ".join(problems))
        if not values.get("secret_key"):
            values["secret_key"] = secrets.token_hex(32)
        return cls(**values)


def _as_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return number
