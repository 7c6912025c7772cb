"""Sign-in: a user's email and password in, ID and refresh tokens out.

The web app never checks a token's signature itself: the API does that on every call, and a
token the API refuses ends the web session. The claims read here (email, subject, expiry) only
label the page and time the refresh.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class SignInError(Exception):
    """Sign-in or refresh refused; ``str(exc)`` is safe to show the user."""


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
            raise SignInError(_WRONG_PASSWORD) from exc
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
                raise SignInError(_WRONG_PASSWORD)
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


def make_authenticator(settings: Any) -> Authenticator:
    if settings.auth_provider == "identity_platform":
        return IdentityPlatformAuth(settings.identity_api_key, timeout_s=settings.api_timeout_s,
                                    emulator_host=settings.firebase_auth_emulator_host)
    return CognitoAuth(settings.user_pool_client_id, settings.region)
