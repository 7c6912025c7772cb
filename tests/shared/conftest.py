"""The API as a client meets it, on AWS and on GCP, from one set of tests.

``api`` is parametrized over ["aws", "gcp"]:

- aws: functions/predict_proxy/app.py and functions/similar/app.py, called in process with API
  Gateway events built from the events/ files, against DynamoDB and SQS on moto (tables and queue
  from template.yaml) and the serving process at the SageMaker runtime path.
- gcp: the ``predict`` and ``similar`` Cloud Functions under functions-framework over HTTP, with
  a locally issued Identity Platform token, against the Firestore emulator and the same serving
  process at the Vertex AI path.

Both answer from the same model and the same stones, so the answers must be the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from gemcast.gcp import FirestoreInventory
from gemcast.inventory import DynamoInventory
from gemcast_local.gcp_stack import PROJECT, LocalIdentity, ServingProcess
from gemcast_local.invoke import load_event
from gemcast_local.provision import provision
from gemcast_local.runtime import import_handler
from gemcast_local.template import load_template
from tests.shared.fixtures import GcpTestEnv
from tests.shared.stack import call_function, gcp_event

REPO = Path(__file__).resolve().parents[2]
AWS_HANDLERS = ("predict_proxy", "similar")
Answer = tuple[int, dict[str, Any]]


@dataclass
class Api:
    cloud: str
    predict: Callable[[str], Answer]
    similar: Callable[[Mapping[str, str]], Answer]
    load: Callable[[Iterable[Mapping[str, Any]]], int]


def _missing_aws_handlers() -> list[str]:
    return [name for name in AWS_HANDLERS if not (REPO / "functions" / name / "app.py").is_file()]


def aws_api(monkeypatch: pytest.MonkeyPatch, serving: ServingProcess, model_registry: str,
            lambda_context: Any) -> Api:
    missing = _missing_aws_handlers()
    if missing:
        pytest.skip(f"the AWS handlers {', '.join(missing)} are not written yet")
    template = load_template(REPO / "template.yaml")
    dynamodb = boto3.resource("dynamodb")
    values = provision(template, boto3.client)  # the template's resources, as the local stack has them
    for name, value in {
        "ENDPOINT_NAME": "gemcast-parity", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": serving.url,
        "REGISTRY_URI": model_registry, "PREDICTION_LOG_TABLE": values["PredictionLogTable"],
        "LOG_DLQ_URL": values["PredictionLogDLQ"], "INVENTORY_TABLE": values["InventoryTable"],
        "POWERTOOLS_SERVICE_NAME": "parity", "POWERTOOLS_METRICS_NAMESPACE": "gemcast",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    predict_app, similar_app = (import_handler(name, {}) for name in AWS_HANDLERS)

    def answer(response: Mapping[str, Any]) -> Answer:
        return int(response["statusCode"]), json.loads(response["body"])

    def predict(body: str) -> Answer:
        event = load_event("predict_proxy_one_stone.json")
        event["body"] = body
        return answer(predict_app.lambda_handler(event, lambda_context))

    def similar(query: Mapping[str, str]) -> Answer:
        event = load_event("similar_five.json")
        event["queryStringParameters"] = dict(query)
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
        return answer(similar_app.lambda_handler(event, lambda_context))

    inventory = DynamoInventory(values["InventoryTable"], resource=dynamodb)
    return Api("aws", predict, similar, inventory.put_stones)


def gcp_api(env: GcpTestEnv, identity: LocalIdentity) -> Api:
    token = identity.id_token("parity-user", email="parity@example.com")

    def answer(response: Any) -> Answer:
        return int(response.status_code), dict(response.json())

    def predict(body: str) -> Answer:
        return answer(call_function(env.url("predict"), "predict_one_stone", token, body=body))

    def similar(query: Mapping[str, str]) -> Answer:
        return answer(call_function(env.url("similar"), "similar_ok", token, query=dict(query)))

    return Api("gcp", predict, similar, FirestoreInventory(env.firestore, "inventory").put_stones)


@pytest.fixture(params=["aws", "gcp"])
def api(request: pytest.FixtureRequest) -> Api:
    if request.param == "aws":
        request.getfixturevalue("aws_env")
        return aws_api(request.getfixturevalue("monkeypatch"), request.getfixturevalue("serving"),
                       request.getfixturevalue("model_registry"), request.getfixturevalue("lambda_context"))
    request.getfixturevalue("aws_env")  # boto3 in this process must never reach a real account
    return gcp_api(request.getfixturevalue("gcp"), request.getfixturevalue("identity"))


@pytest.fixture
def both(request: pytest.FixtureRequest, aws_env: dict[str, str],
         monkeypatch: pytest.MonkeyPatch) -> dict[str, Api]:
    aws = aws_api(monkeypatch, request.getfixturevalue("serving"), request.getfixturevalue("model_registry"),
                  request.getfixturevalue("lambda_context"))
    gcp = gcp_api(request.getfixturevalue("gcp"), request.getfixturevalue("identity"))
    return {"aws": aws, "gcp": gcp}


def body_of(fixture: str) -> str:
    return str(gcp_event(fixture)["body"])


def query_of(fixture: str) -> dict[str, str]:
    return dict(gcp_event(fixture)["query"])


__all__ = ["PROJECT", "Api", "body_of", "query_of"]
