"""Cognito user-pool triggers: who may sign up, the profile a new user gets, the tier claim.

The decisions (``check_sign_up``, ``create_profile``, ``tier_of``) take plain values and a
table, so they are tested without any event. The ``*_event`` functions adapt them to the
Cognito trigger event shapes (pre sign-up, post confirmation, pre token generation V1) and
return the event with its ``response`` filled, as Cognito expects.

Privacy: the profile holds the user's ``sub``, tier and creation time. The e-mail address
stays in Cognito (the token carries it when a client needs it); the password never reaches
a trigger at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from gemcast.config import Settings
from gemcast.errors import GemcastError

TIER_CLAIM = "tier"


class SignUpDeniedError(GemcastError):
    """A sign-up was refused. Cognito shows the message to the person signing up."""


class UsersTable(Protocol):
    """The part of a boto3 DynamoDB ``Table`` the hooks use."""

    def put_item(self, **kwargs: Any) -> Any: ...

    def get_item(self, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class SignUpDecision:
    auto_confirm_user: bool
    auto_verify_email: bool


def email_domain(email: str) -> str:
    """The lower-cased domain of ``email``; '' when it has none."""
    _, at, domain = email.strip().rpartition("@")
    return domain.lower() if at else ""


def check_sign_up(email: str, allowed_domains: tuple[str, ...], auto_confirm: bool) -> SignUpDecision:
    """Allow ``email`` when its domain is listed exactly; raise SignUpDeniedError otherwise.

    Subdomains are not implied: list ``eng.example.com`` to admit it. An empty list admits
    nobody (a pool that forgot its setting stays closed).
    """
    domain = email_domain(email)
    if not domain:
        raise SignUpDeniedError("Sign-up needs a valid e-mail address.")
    allowed = {d.strip().lower() for d in allowed_domains if d.strip()}
    if domain not in allowed:
        raise SignUpDeniedError(
            f"Sign-up with an e-mail address at {domain} is not allowed; "
            "use your organisation's e-mail address."
        )
    # Cognito verifies an e-mail only for a user it also confirms.
    return SignUpDecision(auto_confirm_user=auto_confirm, auto_verify_email=auto_confirm)


def create_profile(table: UsersTable, user_id: str, tier: str, now: datetime | None = None) -> bool:
    """Write the profile of a newly confirmed user; True when written.

    Conditional on the user having none: a replayed confirmation (Cognito retries a trigger
    that timed out) must not reset a tier that was changed since. Returns False then.
    """
    # Imported here: the GCP blocking functions share this module and ship without botocore.
    from botocore.exceptions import ClientError

    if not user_id:
        raise GemcastError("create_profile needs the user's sub")
    created_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    try:
        table.put_item(
            Item={"user_id": user_id, "tier": tier, "created_at": created_at},
            ConditionExpression="attribute_not_exists(user_id)",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return False
        raise
    return True


def tier_of(table: UsersTable, user_id: str, default: str) -> str:
    """The user's tier, or ``default`` when the user has no profile (yet)."""
    item = table.get_item(Key={"user_id": user_id}, ProjectionExpression=TIER_CLAIM).get("Item")
    tier = item.get(TIER_CLAIM) if item else None
    return str(tier) if tier else default


def _user_attributes(event: Mapping[str, Any]) -> Mapping[str, Any]:
    attributes = (event.get("request") or {}).get("userAttributes") or {}
    return attributes if isinstance(attributes, Mapping) else {}


def _response(event: dict[str, Any]) -> dict[str, Any]:
    response = event.get("response")
    if not isinstance(response, dict):
        response = {}
        event["response"] = response
    return response


def pre_sign_up_event(event: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Pre sign-up trigger: refuse unlisted domains; auto-confirm when AUTO_CONFIRM is on."""
    email = str(_user_attributes(event).get("email") or "")
    decision = check_sign_up(email, settings.allowed_email_domains, settings.auto_confirm)
    response = _response(event)
    response["autoConfirmUser"] = decision.auto_confirm_user
    response["autoVerifyEmail"] = decision.auto_verify_email
    response.setdefault("autoVerifyPhone", False)
    return event


def post_confirmation_event(
    event: dict[str, Any], settings: Settings, table: UsersTable, now: datetime | None = None
) -> dict[str, Any]:
    """Post confirmation trigger: create the profile on a confirmed sign-up.

    A confirmed password reset (``PostConfirmation_ConfirmForgotPassword``) reuses this
    trigger; the user has a profile already, so nothing is written.
    """
    if event.get("triggerSource") == "PostConfirmation_ConfirmSignUp":
        user_id = str(_user_attributes(event).get("sub") or "")
        create_profile(table, user_id, settings.default_tier, now=now)
    _response(event)
    return event


def pre_token_generation_event(
    event: dict[str, Any], settings: Settings, table: UsersTable
) -> dict[str, Any]:
    """Pre token generation trigger (V1 event): add the ``tier`` claim to the ID token."""
    user_id = str(_user_attributes(event).get("sub") or "")
    tier = tier_of(table, user_id, settings.default_tier) if user_id else settings.default_tier
    response = _response(event)
    details = response.get("claimsOverrideDetails")
    if not isinstance(details, dict):
        details = {}
        response["claimsOverrideDetails"] = details
    claims = details.get("claimsToAddOrOverride")
    if not isinstance(claims, dict):
        claims = {}
        details["claimsToAddOrOverride"] = claims
    claims[TIER_CLAIM] = tier
    return event
