"""The local stack as a hostile client and a bad day meet it: one stack for the package.

`gemcast up`'s runner on free ports, with a linear model so the start takes seconds; the
contract fuzzing and the fault drills of the prediction log go through its gateway with a
signed-in user's Cognito ID token, as any client would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gemcast_local.servers import free_port
from gemcast_local.stack import LocalStack, StackConfig


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    state = tmp_path_factory.mktemp("fuzz-state") / ".gemcast"
    config = StackConfig(
        state_dir=state, api_port=free_port(), serve_port=free_port(), web_port=free_port(), kind="linear",
        moto_port=free_port(),  # a fixed port: the moto drill restarts it where the functions look
        serve_workers=1,
    )
    with LocalStack(config, say=lambda _msg: None) as running:
        yield running


@pytest.fixture(scope="package")
def id_token(stack: LocalStack) -> str:
    answer = stack.client("cognito-idp").initiate_auth(
        ClientId=stack.client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": stack.config.demo_email, "PASSWORD": stack.config.demo_password},
    )
    return str(answer["AuthenticationResult"]["IdToken"])


@pytest.fixture(scope="package")
def api_url(stack: LocalStack) -> str:
    assert stack.gateway is not None
    return str(stack.gateway.url)


def plain_item(item: dict[str, Any]) -> dict[str, Any]:
    """A low-level DynamoDB item as plain values."""
    from boto3.dynamodb.types import TypeDeserializer

    return {k: TypeDeserializer().deserialize(v) for k, v in item.items()}
