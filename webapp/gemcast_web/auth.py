"""Sign-in: a user's email and password in, ID and refresh tokens out.

The web app never checks a token's signature itself: the API does that on every call, and a
token the API refuses ends the web session. The claims read here (email, subject, expiry) only
label the page and time the refresh.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)


class SignInError(Exception):
    """Sign-in or refresh refused; ``str(exc)`` is safe to show the user."""


class WrongPasswordError(SignInError):
    """The email and password do not match an account (the one failure the throttle counts)."""

    def __init__(self) -> None:
        super().__init__(_WRONG_PASSWORD)


@dataclass(frozen=True)
class Tokens:
    id_token: str
    refresh_token: str
    expires_at: float
    email: str
    subject: str


class Authenticator(Protocol):
    def sign_in(self, email: str, password: str) -> Tokens: ...

    def refresh(self, tokens: Tokens) -> Tokens: ...

    def sign_out(self, tokens: Tokens) -> None: ...


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (the API verifies; see the module docstring)."""
    try:
        payload = token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (IndexError, ValueError) as exc:
        raise SignInError("the identity provider returned an unreadable token") from exc
    return claims if isinstance(claims, dict) else {}


def tokens_from(
    id_token: str, refresh_token: str, fallback_email: str = "", now: float | None = None
) -> Tokens:
    claims = claims_of(id_token)
    moment = time.time() if now is None else now
    return Tokens(
        id_token=id_token,
        refresh_token=refresh_token,
        expires_at=float(claims.get("exp") or moment + 3600),
        email=str(claims.get("email") or fallback_email),
        subject=str(claims.get("sub") or claims.get("user_id") or ""),
    )


_WRONG_PASSWORD = "Incorrect email or password."


class CognitoAuth:
    """USER_PASSWORD_AUTH against a Cognito user pool app client without a secret.

    ``client`` is a boto3 cognito-idp client; boto3 reads ``AWS_ENDPOINT_URL`` itself, which
    points it at the local stack's moto server. InitiateAuth needs no AWS credentials.
    """

    def __init__(self, client_id: str, region: str, client: Any = None) -> None:
        if client is None:
            import boto3
            from botocore.config import Config

            # A person is waiting on the page: fail in seconds, not after botocore's long retries.
            config = Config(
                retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=10
            )
            client = boto3.client("cognito-idp", region_name=region, config=config)
        self.client = client
        self.client_id = client_id

    def sign_in(self, email: str, password: str) -> Tokens:
        errors = self.client.exceptions
        try:
            answer = self.client.initiate_auth(
                ClientId=self.client_id,
                AuthFlow="USER_PASSWORD_AUTH",
                AuthParameters={"USERNAME": email, "PASSWORD": password},
            )
        except (errors.NotAuthorizedException, errors.UserNotFoundException) as exc:
            # One message for both, so the page does not tell who has an account.
            raise WrongPasswordError() from exc
        except errors.UserNotConfirmedException as exc:
            raise SignInError("This account is not confirmed yet.") from exc
        except errors.PasswordResetRequiredException as exc:
            raise SignInError("This account needs a password reset before it can sign in.") from exc
        except errors.TooManyRequestsException as exc:
            raise SignInError("Too many sign-in attempts; wait a minute and try again.") from exc
        if "AuthenticationResult" not in answer:
            challenge = answer.get("ChallengeName", "an extra step")
            raise SignInError(f"This account must complete {challenge} before it can sign in here.")
        result = answer["AuthenticationResult"]
        return tokens_from(result["IdToken"], result.get("RefreshToken", ""), email)

    def refresh(self, tokens: Tokens) -> Tokens:
        if not tokens.refresh_token:
            raise SignInError("Your session has expired. Please sign in again.")
        try:
            answer = self.client.initiate_auth(
                ClientId=self.client_id,
                AuthFlow="REFRESH_TOKEN_AUTH",
                AuthParameters={"REFRESH_TOKEN": tokens.refresh_token},
            )
        except self.client.exceptions.NotAuthorizedException as exc:
            raise SignInError("Your session has expired. Please sign in again.") from exc
        result = answer.get("AuthenticationResult") or {}
        if "IdToken" not in result:
            raise SignInError("Your session has expired. Please sign in again.")
        # Cognito does not rotate the refresh token on REFRESH_TOKEN_AUTH.
        return tokens_from(
            result["IdToken"], result.get("RefreshToken") or tokens.refresh_token, tokens.email
        )

    def sign_out(self, tokens: Tokens) -> None:
        """Revoke the refresh token (the pool client has token revocation on)."""
        if not tokens.refresh_token:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.revoke_token(Token=tokens.refresh_token, ClientId=self.client_id)
        except (ClientError, BotoCoreError) as exc:
            # The web session is gone whatever happens here; a stale refresh token expires by itself.
            logger.warning("revoke_token failed: %s", exc)


class IdentityPlatformAuth:
    """Email and password sign-in with Identity Platform (GCP), through its REST API.

    Google offers no Python client for end-user sign-in, so this is plain HTTPS with the
    project's web API key, as the Identity Platform documentation shows. With
    ``emulator_host`` (FIREBASE_AUTH_EMULATOR_HOST) the same calls go to the Firebase Auth
    emulator, which serves them at ``http://<host>/<service host>/<path>``, as Google's own
    client libraries do when that variable is set.
    """

    SIGN_IN = "https://identitytoolkit.googleapis.com/v1/accounts:signInWithPassword"
    REFRESH = "https://securetoken.googleapis.com/v1/token"

    def __init__(self, api_key: str, session: Any = None, timeout_s: float = 10.0,
                 emulator_host: str = "") -> None:
        if session is None:
            import requests

            session = requests.Session()
        self.session = session
        self.api_key = api_key
        self.timeout_s = timeout_s
        local = f"http://{emulator_host}/" if emulator_host else "https://"
        self.sign_in_url = self.SIGN_IN.replace("https://", local, 1)
        self.refresh_url = self.REFRESH.replace("https://", local, 1)

    def sign_in(self, email: str, password: str) -> Tokens:
        response = self.session.post(
            self.sign_in_url,
            params={"key": self.api_key},
            timeout=self.timeout_s,
            json={"email": email, "password": password, "returnSecureToken": True},
        )
        body = response.json()
        if response.status_code != 200:
            reason = str(body.get("error", {}).get("message", ""))
            if reason.startswith(("EMAIL_NOT_FOUND", "INVALID_PASSWORD", "INVALID_LOGIN_CREDENTIALS")):
                raise WrongPasswordError()
            if reason.startswith("TOO_MANY_ATTEMPTS"):
                raise SignInError("Too many sign-in attempts; wait a minute and try again.")
            if reason.startswith("USER_DISABLED"):
                raise SignInError("This account is disabled.")
            raise SignInError("Sign-in failed; try again shortly.")
        return tokens_from(body["idToken"], body.get("refreshToken", ""), email)

    def refresh(self, tokens: Tokens) -> Tokens:
        response = self.session.post(
            self.refresh_url,
            params={"key": self.api_key},
            timeout=self.timeout_s,
            data={"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
        )
        if response.status_code != 200:
            raise SignInError("Your session has expired. Please sign in again.")
        body = response.json()
        return tokens_from(body["id_token"], body.get("refresh_token", tokens.refresh_token), tokens.email)

    def sign_out(self, tokens: Tokens) -> None:
        # Identity Platform has no per-token revocation for end users; the session is dropped.
        return None


# -- where to go after signing in ----------------------------------------------------------------
def safe_next(target: str | None) -> str | None:
    r"""``target`` when a browser would read it as a path on this site, else None.

    Browsers drop tabs and newlines anywhere in a URL, strip leading control characters and
    spaces, and read a backslash as a slash: "/\t/evil.example", " //evil.example" and
    "/\evil.example" all lead off the site. So a target with any control character, space or
    backslash is refused, and what is left must be one "/" followed by no second "/" and have
    neither a scheme nor a host once parsed.
    """
    if not target or len(target) > 2048:
        return None
    if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "\\" for c in target):
        return None
    if not target.startswith("/") or target.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


# -- throttling wrong passwords ---------------------------------------------------------------
class SignInThrottle:
    """Wrong passwords counted per account and per client address over a sliding window.

    After ``per_account`` wrong passwords for one email (or ``per_address`` from one address)
    within ``window_s``, further tries are refused until the oldest failure leaves the window;
    the right password clears the account's count. The counts live in this process (the web
    app runs one worker, see sessions.py); Cognito and Identity Platform throttle on their side
    as well. At most ``max_keys`` emails and addresses are remembered, the stalest forgotten first.
    """

    def __init__(self, per_account: int = 5, per_address: int = 20, window_s: float = 900.0, *,
                 max_keys: int = 200_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_account = per_account
        self.per_address = per_address
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _keys(email: str, address: str) -> tuple[str, str]:
        return f"account:{email.strip().lower()}", f"address:{address}"

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key) or deque()
        while times and now - times[0] >= self.window_s:
            times.popleft()
        return times

    def refusal(self, email: str, address: str) -> tuple[str, int] | None:
        """(message, seconds to wait) when this try must be refused, else None."""
        now = self.clock()
        account, client = self._keys(email, address)
        with self._lock:
            for key, limit, who in ((account, self.per_account, "this account"),
                                    (client, self.per_address, "your network address")):
                times = self._recent(key, now)
                if len(times) >= limit:
                    wait = max(1, math.ceil(times[0] + self.window_s - now))
                    minutes = max(1, math.ceil(wait / 60))
                    return (f"Too many wrong passwords for {who}. Wait {minutes} minute"
                            f"{'s' if minutes != 1 else ''} before trying again.", wait)
        return None

    def failed(self, email: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(email, address):
                times = self._recent(key, now)
                times.append(now)
                self._failures[key] = times
                self._failures.move_to_end(key)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def succeeded(self, email: str) -> None:
        with self._lock:
            self._failures.pop(self._keys(email, "")[0], None)


def make_authenticator(settings: Any) -> Authenticator:
    if settings.auth_provider == "identity_platform":
        return IdentityPlatformAuth(settings.identity_api_key, timeout_s=settings.api_timeout_s,
                                    emulator_host=settings.firebase_auth_emulator_host)
    return CognitoAuth(settings.user_pool_client_id, settings.region)
