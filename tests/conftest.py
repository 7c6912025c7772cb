"""Shared fixtures. The stand-in servers come from the plugin below."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

pytest_plugins = ["tests.plugins.servers", "tests.shared.fixtures"]


@dataclass
class FakeLambdaContext:
    """The attributes of a Lambda context that handlers and powertools read."""

    function_name: str = "gemcast-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:gemcast-test"
    aws_request_id: str = "2b0d4f4e-4f0c-4d7e-9a53-5c1d3f6f1a10"
    log_group_name: str = "/aws/lambda/gemcast-test"
    log_stream_name: str = "2024/01/01/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()
