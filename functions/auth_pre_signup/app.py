"""Cognito pre sign-up trigger: listed e-mail domains only; auto-confirm where AUTO_CONFIRM is on."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from gemcast.auth_hooks import pre_sign_up_event
from gemcast.config import Settings

logger = Logger()
SETTINGS = Settings.from_env()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # A SignUpDeniedError propagates: Cognito shows its message to the person signing up.
    return pre_sign_up_event(event, SETTINGS)
