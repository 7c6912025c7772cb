"""Cognito pre token generation trigger (V1): add the user's ``tier`` claim."""

from typing import Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from gemcast.auth_hooks import pre_token_generation_event
from gemcast.config import Settings

logger = Logger()
SETTINGS = Settings.from_env(required=("users_table",))
USERS = boto3.resource("dynamodb").Table(SETTINGS.users_table)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return pre_token_generation_event(event, SETTINGS, USERS)
