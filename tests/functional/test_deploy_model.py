"""deploy_model: a new champion rolls the SageMaker endpoint, against S3 and SageMaker on moto.

moto implements CreateModel, CreateEndpointConfig, CreateEndpoint and DescribeEndpoint but no
UpdateEndpoint. The function's client is therefore wrapped in gemcast_local's MotoSageMaker
(what the local runner uses too): UpdateEndpoint is checked against SageMaker's API model,
recorded for the assertions below, and applied as delete + create on moto.
"""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import pytest

from gemcast.deploy import DeploymentError, resource_name
from gemcast.errors import NotFoundError
from gemcast_local.invoke import load_event, retarget_s3_event
from gemcast_local.runtime import MotoSageMaker, import_handler

BUCKET = "gemcast-test-data"
ENDPOINT = "gemcast-test"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/gemcast-serving:latest"
ROLE = "arn:aws:iam::123456789012:role/gemcast-test-sagemaker"
V1, V2 = "20240501T120000Z-aaa111", "20240502T030000Z-bbb222"
ALARMS = ("gemcast-test-endpoint-errors", "gemcast-test-endpoint-latency")


def publish(s3: Any, version: str) -> None:
    """A version in the registry and the pointer naming it (only what deployment reads)."""
    s3.put_object(Bucket=BUCKET, Key=f"models/{version}/manifest.json",
                  Body=json.dumps({"version": version, "files": {}}).encode())
    s3.put_object(Bucket=BUCKET, Key="models/champion.json",
                  Body=json.dumps({"version": version, "snapshot_id": "snap-1"}).encode())


@pytest.fixture
def deploy(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Returns ``deploy(mode)``: invoke the handler with its event, in serverless or instance mode."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for name, value in {"REGISTRY_URI": f"s3://{BUCKET}/models", "ENDPOINT_NAME": ENDPOINT,
                        "SERVING_IMAGE_URI": IMAGE, "SAGEMAKER_ROLE_ARN": ROLE,
                        "ROLLBACK_ALARM_NAMES": ",".join(ALARMS), "ENDPOINT_INSTANCE_TYPE": "ml.c5.large",
                        "POWERTOOLS_SERVICE_NAME": "deploy_model", "POWERTOOLS_METRICS_NAMESPACE": "gemcast",
                        "POWERTOOLS_TRACE_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    sagemaker = MotoSageMaker(boto3.client("sagemaker"))

    def run(mode: str, context: Any, client: Any = None) -> dict[str, Any]:
        monkeypatch.setenv("ENDPOINT_MODE", mode)
        app = import_handler("deploy_model", {})
        app.SAGEMAKER = client or sagemaker
        event = retarget_s3_event(load_event("deploy_model_champion_changed.json"), BUCKET)
        result: dict[str, Any] = app.lambda_handler(event, context)
        return result

    run.s3 = s3  # type: ignore[attr-defined]
    run.sagemaker = sagemaker  # type: ignore[attr-defined]
    return run


def endpoint_container() -> tuple[dict[str, Any], dict[str, Any]]:
    sm = boto3.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName=ENDPOINT)
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    (variant,) = config["ProductionVariants"]
    model = sm.describe_model(ModelName=variant["ModelName"])
    return variant, model


def test_the_first_champion_creates_the_endpoint_pinned_to_its_version(
    deploy: Any, lambda_context: Any
) -> None:
    publish(deploy.s3, V1)

    result = deploy("serverless", lambda_context)

    assert result["action"] == "created" and result["version"] == V1
    variant, model = endpoint_container()
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert model["PrimaryContainer"]["Image"] == IMAGE and model["ExecutionRoleArn"] == ROLE
    # The serving image loads exactly this version, never "whatever is champion now".
    assert model["PrimaryContainer"]["Environment"] == {"REGISTRY_URI": f"s3://{BUCKET}/models",
                                                        "MODEL_VERSION": V1}


def test_a_redelivered_event_for_the_same_champion_changes_nothing(deploy: Any, lambda_context: Any) -> None:
    publish(deploy.s3, V1)
    first = deploy("instance", lambda_context)
    created = boto3.client("sagemaker").describe_endpoint(EndpointName=ENDPOINT)["CreationTime"]

    again = deploy("instance", lambda_context)

    assert again["action"] == "unchanged" and again["endpoint_config"] == first["endpoint_config"]
    assert deploy.sagemaker.updates == []
    assert boto3.client("sagemaker").describe_endpoint(EndpointName=ENDPOINT)["CreationTime"] == created


def test_a_new_champion_rolls_an_instance_endpoint_blue_green_with_alarm_rollback(
    deploy: Any, lambda_context: Any
) -> None:
    publish(deploy.s3, V1)
    deploy("instance", lambda_context)
    publish(deploy.s3, V2)

    result = deploy("instance", lambda_context)

    assert result["action"] == "updated" and result["guardrails"] is True
    (update,) = deploy.sagemaker.updates
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    assert policy["TerminationWaitInSeconds"] > 0 and policy["MaximumExecutionTimeoutInSeconds"] >= 600
    assert update["DeploymentConfig"]["AutoRollbackConfiguration"] == {
        "Alarms": [{"AlarmName": name} for name in ALARMS]
    }
    variant, model = endpoint_container()
    assert model["PrimaryContainer"]["Environment"]["MODEL_VERSION"] == V2
    assert variant["VariantName"] == "AllTraffic"  # blue/green needs the same variant name


def test_a_serverless_endpoint_is_updated_without_guardrails(deploy: Any, lambda_context: Any) -> None:
    publish(deploy.s3, V1)
    deploy("serverless", lambda_context)
    publish(deploy.s3, V2)

    result = deploy("serverless", lambda_context)

    assert result["action"] == "updated" and result["guardrails"] is False
    (update,) = deploy.sagemaker.updates
    assert "DeploymentConfig" not in update
    assert endpoint_container()[1]["PrimaryContainer"]["Environment"]["MODEL_VERSION"] == V2


def test_switching_to_instance_mode_makes_a_new_config_for_the_same_version(
    deploy: Any, lambda_context: Any
) -> None:
    publish(deploy.s3, V1)
    first = deploy("serverless", lambda_context)

    second = deploy("instance", lambda_context)

    assert second["action"] == "updated" and second["endpoint_config"] != first["endpoint_config"]
    variant, _ = endpoint_container()
    assert variant["InstanceType"] == "ml.c5.large" and "ServerlessConfig" not in variant


def test_a_pointer_to_a_missing_version_is_refused(deploy: Any, lambda_context: Any) -> None:
    deploy.s3.put_object(Bucket=BUCKET, Key="models/champion.json", Body=json.dumps({"version": V1}).encode())

    with pytest.raises(NotFoundError, match="no model version"):
        deploy("serverless", lambda_context)
    assert boto3.client("sagemaker").list_endpoints()["Endpoints"] == []


def test_an_endpoint_busy_updating_is_retried_later(deploy: Any, lambda_context: Any) -> None:
    class Busy(MotoSageMaker):
        def describe_endpoint(self, **kwargs: Any) -> dict[str, Any]:
            return {"EndpointName": ENDPOINT, "EndpointConfigName": "gemcast-test-other",
                    "EndpointStatus": "Updating"}

    publish(deploy.s3, V1)

    with pytest.raises(DeploymentError, match="Updating"):
        deploy("instance", lambda_context, client=Busy(boto3.client("sagemaker")))
    assert boto3.client("sagemaker").list_models()["Models"] == []  # nothing half-made


def test_resource_names_fit_sagemaker_and_differ_by_content() -> None:
    long_endpoint = "gemcast-" + "x" * 70
    name = resource_name(long_endpoint, V1, {"image": IMAGE})
    assert len(name) <= 63 and re.fullmatch(r"[A-Za-z0-9](-*[A-Za-z0-9])*", name)
    same = resource_name(ENDPOINT, V1, {"image": IMAGE})
    assert same == resource_name(ENDPOINT, V1, {"image": IMAGE})
    assert same != resource_name(ENDPOINT, V1, {"image": IMAGE + "2"})
