"""The local SageMaker runtime fails as SageMaker does, and predict_proxy handles each failure.

boto3's real sagemaker-runtime client calls the stand-in (gemcast_local.sagemaker_runtime) in
front of a real serving process: a container's refusal reaches it as ModelError (424) with
OriginalStatusCode and OriginalMessage, a serverless endpoint at its concurrency as
ThrottlingException, a container that never answers as a timed-out ModelError. SageMakerEndpoint
turns each into the EndpointError the API answers with (502 or 503), and the proxy logs it.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import boto3
import pytest

from gemcast.aws import SageMakerEndpoint
from gemcast.errors import EndpointError
from gemcast_local.servers import StandInServer
from tests.functional.test_predict_proxy import (  # noqa: F401 - fixtures shared with the proxy's tests
    SUB,
    as_caller,
    invoke,
    load_event,
    load_proxy,
    logged,
    stack,
)

STONE = {"carat": 0.7, "cut": "Ideal", "color": "E", "clarity": "VS1", "depth": 61.8, "table": 56.0,
         "x": 5.7, "y": 5.72, "z": 3.53}


class RuntimeServer(StandInServer):
    name = "sagemaker-runtime"
    probe_path = "/ping"

    def __init__(self, container_url: str, *args: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.container_url = container_url
        self.args = list(args)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gemcast_local.sagemaker_runtime", "--host", self.host, "--port",
                str(self.port), "--container", self.container_url, *self.args]

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url}


@pytest.fixture(scope="module")
def runtime(stack: dict[str, Any]) -> Iterator[RuntimeServer]:  # noqa: F811
    with RuntimeServer(stack["server"].url) as server:
        yield server


def client(url: str) -> Any:
    from botocore.config import Config

    return boto3.client("sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x", config=Config(retries={"max_attempts": 1}, read_timeout=10))


def test_a_container_refusal_reaches_boto3_as_model_error_with_the_original_answer(runtime: RuntimeServer) -> None:
    sm = client(runtime.url)
    ok = sm.invoke_endpoint(EndpointName="gemcast-dev", ContentType="application/json",
                            Body=json.dumps({"instances": [STONE]}).encode())
    assert json.loads(ok["Body"].read())["predictions"][0]["price"] > 0
    assert ok["InvokedProductionVariant"] == "AllTraffic"
    with pytest.raises(sm.exceptions.ModelError) as failed:
        sm.invoke_endpoint(EndpointName="gemcast-dev", ContentType="application/json", Body=b"{not json")
    response = failed.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert "not JSON" in json.loads(response["OriginalMessage"])["error"]["message"]
    assert response["LogStreamArn"].startswith("arn:aws:logs:")
    assert "Received client error (400)" in response["Error"]["Message"]


def test_each_failure_becomes_the_endpoint_error_the_api_answers_with(runtime: RuntimeServer,
                                                                      stack: dict[str, Any]) -> None:  # noqa: F811
    with pytest.raises(EndpointError) as refused:
        SageMakerEndpoint(client(runtime.url), "gemcast-dev").invoke("bad")  # type: ignore[arg-type]
    assert refused.value.status == 502 and "answered 400" in str(refused.value)
    with RuntimeServer(stack["server"].url, "--endpoint", "gemcast-dev") as named, \
            pytest.raises(EndpointError) as missing:
        SageMakerEndpoint(client(named.url), "no-such-endpoint").invoke([STONE])
    assert missing.value.status == 503 and "not found" in str(missing.value)
    with RuntimeServer(stack["server"].url, "--max-concurrency", "0") as throttled, \
            pytest.raises(EndpointError) as slow:
        SageMakerEndpoint(client(throttled.url), "gemcast-dev").invoke([STONE])
    assert slow.value.status == 503 and "ThrottlingException" in str(slow.value)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts, never answers
    try:
        with RuntimeServer(f"http://127.0.0.1:{silent.getsockname()[1]}", "--timeout", "1") as stuck, \
                pytest.raises(EndpointError) as late:
            SageMakerEndpoint(client(stuck.url), "gemcast-dev").invoke([STONE])
    finally:
        silent.close()
    assert late.value.status == 503 and "timed out" in str(late.value)


def test_predict_proxy_answers_a_throttled_endpoint_with_503_and_logs_it(
    load_proxy: Callable[..., ModuleType], stack: dict[str, Any], lambda_context: Any  # noqa: F811
) -> None:
    with RuntimeServer(stack["server"].url, "--max-concurrency", "0") as throttled:
        event = as_caller(load_event("predict_proxy_one_stone"), SUB, "0f1e2d3c-0429-4a5b-8c7d-000000000429")
        status, body, headers = invoke(load_proxy(**throttled.env()), event, lambda_context)
    assert status == 503 and headers["Retry-After"]
    assert "unavailable" in body["error"]["message"]
    record = logged(stack, "0f1e2d3c-0429-4a5b-8c7d-000000000429")
    assert record is not None and record["status"] == 503


def test_predict_proxy_through_the_stand_in_prices_as_before(
    load_proxy: Callable[..., ModuleType], runtime: RuntimeServer, lambda_context: Any  # noqa: F811
) -> None:
    status, body, _ = invoke(load_proxy(**runtime.env()), load_event("predict_proxy_one_stone"), lambda_context)
    assert status == 200 and body["price"] > 0
