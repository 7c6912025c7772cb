"""The three Cognito triggers, driven by their events/ files against DynamoDB on moto.

The users table is created from template.yaml (the local provisioning), so a key-schema change
in the template reaches these tests too; the handlers are imported by the local runtime.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from gemcast.auth_hooks import SignUpDeniedError, check_sign_up, create_profile, tier_of
from gemcast_local.runtime import import_handler

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
SUB = "5c0f7e2a-3b1d-4c8e-9f6a-2d4b8e1a7c90"  # the sub in the events files


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture
def users_table(provisioned: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The template's UsersTable on moto; USERS_TABLE and DEFAULT_TIER set as the template does."""
    table = boto3.resource("dynamodb").Table(provisioned["UsersTable"])
    monkeypatch.setenv("USERS_TABLE", table.name)
    monkeypatch.setenv("DEFAULT_TIER", "standard")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "auth_test")
    return table


@pytest.fixture
def signup_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    def set_env(auto_confirm: bool) -> None:
        monkeypatch.setenv("ALLOWED_EMAIL_DOMAINS", "example.com, gemcast.dev")
        monkeypatch.setenv("AUTO_CONFIRM", "true" if auto_confirm else "false")
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "auth_test")

    return set_env


# ----------------------------------------------------------------------------- pre sign-up


def test_pre_signup_dev_auto_confirms_an_allowed_domain(
    signup_env: Callable[[bool], None], lambda_context: Any
) -> None:
    signup_env(True)
    app = import_handler("auth_pre_signup", {})

    result = app.lambda_handler(load_event("auth_pre_signup_allowed.json"), lambda_context)

    assert result["response"]["autoConfirmUser"] is True
    assert result["response"]["autoVerifyEmail"] is True
    assert result["userName"] == load_event("auth_pre_signup_allowed.json")["userName"]


def test_pre_signup_prod_leaves_confirmation_to_the_email_code(
    signup_env: Callable[[bool], None], lambda_context: Any
) -> None:
    signup_env(False)
    app = import_handler("auth_pre_signup", {})

    result = app.lambda_handler(load_event("auth_pre_signup_allowed.json"), lambda_context)

    assert result["response"]["autoConfirmUser"] is False
    assert result["response"]["autoVerifyEmail"] is False


def test_pre_signup_refuses_an_unlisted_domain_with_a_readable_reason(
    signup_env: Callable[[bool], None], lambda_context: Any
) -> None:
    signup_env(True)
    app = import_handler("auth_pre_signup", {})

    with pytest.raises(SignUpDeniedError, match=r"not-allowed\.test is not allowed"):
        app.lambda_handler(load_event("auth_pre_signup_denied.json"), lambda_context)


@pytest.mark.parametrize(
    ("email", "allowed"),
    [
        ("Jeweller@Example.COM", True),
        ("jeweller@example.com ", True),
        ("someone@eng.example.com", False),  # subdomains must be listed themselves
        ("someone@example.com.evil.test", False),
        ("a@b@example.com", True),  # the domain is what follows the last @
        ("no-at-sign.example.com", False),
        ("", False),
    ],
)
def test_domain_rule(email: str, allowed: bool) -> None:
    if allowed:
        assert check_sign_up(email, ("example.com",), auto_confirm=False).auto_confirm_user is False
    else:
        with pytest.raises(SignUpDeniedError):
            check_sign_up(email, ("example.com",), auto_confirm=True)


def test_an_empty_allow_list_admits_nobody() -> None:
    with pytest.raises(SignUpDeniedError):
        check_sign_up("jeweller@example.com", (), auto_confirm=True)


# ----------------------------------------------------------------------------- post confirmation


def test_post_confirmation_creates_the_profile_without_personal_data(
    users_table: Any, lambda_context: Any
) -> None:
    app = import_handler("auth_post_confirmation", {})
    event = load_event("auth_post_confirmation.json")

    result = app.lambda_handler(copy.deepcopy(event), lambda_context)

    assert result["triggerSource"] == event["triggerSource"]
    item = users_table.get_item(Key={"user_id": SUB})["Item"]
    assert item["tier"] == "standard"
    assert datetime.fromisoformat(item["created_at"]).tzinfo is not None
    # The profile is keyed by sub and holds no e-mail or password.
    assert set(item) == {"user_id", "tier", "created_at"}


def test_a_replayed_confirmation_does_not_reset_the_tier(users_table: Any, lambda_context: Any) -> None:
    app = import_handler("auth_post_confirmation", {})
    event = load_event("auth_post_confirmation.json")
    app.lambda_handler(copy.deepcopy(event), lambda_context)
    users_table.update_item(
        Key={"user_id": SUB}, UpdateExpression="SET tier = :t", ExpressionAttributeValues={":t": "pro"}
    )

    app.lambda_handler(copy.deepcopy(event), lambda_context)  # Cognito retried the trigger

    assert users_table.get_item(Key={"user_id": SUB})["Item"]["tier"] == "pro"


def test_a_password_reset_confirmation_writes_nothing(users_table: Any, lambda_context: Any) -> None:
    app = import_handler("auth_post_confirmation", {})
    event = load_event("auth_post_confirmation.json")
    event["triggerSource"] = "PostConfirmation_ConfirmForgotPassword"

    app.lambda_handler(event, lambda_context)

    assert "Item" not in users_table.get_item(Key={"user_id": SUB})


def test_create_profile_reports_whether_it_wrote(users_table: Any) -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert create_profile(users_table, "u-1", "standard", now=now) is True
    assert create_profile(users_table, "u-1", "pro", now=now) is False
    assert users_table.get_item(Key={"user_id": "u-1"})["Item"] == {
        "user_id": "u-1",
        "tier": "standard",
        "created_at": "2024-05-01T12:00:00+00:00",
    }


# ----------------------------------------------------------------------------- pre token generation


def test_pre_token_adds_the_stored_tier(users_table: Any, lambda_context: Any) -> None:
    users_table.put_item(Item={"user_id": SUB, "tier": "pro", "created_at": "2024-01-01T00:00:00+00:00"})
    app = import_handler("auth_pre_token", {})

    result = app.lambda_handler(load_event("auth_pre_token.json"), lambda_context)

    assert result["response"]["claimsOverrideDetails"]["claimsToAddOrOverride"] == {"tier": "pro"}


def test_pre_token_defaults_the_tier_of_a_user_without_profile(users_table: Any, lambda_context: Any) -> None:
    app = import_handler("auth_pre_token", {})

    result = app.lambda_handler(load_event("auth_pre_token.json"), lambda_context)

    assert result["response"]["claimsOverrideDetails"]["claimsToAddOrOverride"]["tier"] == "standard"


def test_pre_token_keeps_claims_another_hook_added(users_table: Any, lambda_context: Any) -> None:
    app = import_handler("auth_pre_token", {})
    event = load_event("auth_pre_token.json")
    event["response"]["claimsOverrideDetails"] = {"claimsToAddOrOverride": {"org": "acme"}}

    result = app.lambda_handler(event, lambda_context)

    assert result["response"]["claimsOverrideDetails"]["claimsToAddOrOverride"] == {
        "org": "acme",
        "tier": "standard",
    }


def test_sign_up_to_token_flow(
    users_table: Any, signup_env: Callable[[bool], None], lambda_context: Any
) -> None:
    """Sign-up, confirmation and sign-in, in Cognito's order: the token says the default tier."""
    signup_env(True)
    import_handler("auth_pre_signup", {}).lambda_handler(load_event("auth_pre_signup_allowed.json"), lambda_context)
    import_handler("auth_post_confirmation", {}).lambda_handler(
        load_event("auth_post_confirmation.json"), lambda_context
    )

    result = import_handler("auth_pre_token", {}).lambda_handler(load_event("auth_pre_token.json"), lambda_context)

    assert result["response"]["claimsOverrideDetails"]["claimsToAddOrOverride"]["tier"] == "standard"
    assert tier_of(users_table, SUB, default="x") == "standard"
