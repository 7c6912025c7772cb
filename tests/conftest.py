"""Shared fixtures. The stand-in servers come from the plugin below; the Lambda context and the
template's resources on moto come from the local runtime and provisioning (gemcast_local),
the same code the local stack and `make invoke` run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from gemcast_local.provision import provision
from gemcast_local.runtime import LambdaContext
from gemcast_local.template import load_template

pytest_plugins = ["tests.plugins.servers", "tests.shared.fixtures"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext("gemcast-test", aws_request_id="2b0d4f4e-4f0c-4d7e-9a53-5c1d3f6f1a10")


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template(REPO / "template.yaml")


@pytest.fixture
def provisioned(aws_env: dict[str, str], template: dict[str, Any]) -> dict[str, str]:
    """template.yaml's bucket, tables, queues and user pool on a freshly reset moto: the Ref values."""
    return provision(template, boto3.client, aws_env["AWS_DEFAULT_REGION"])
