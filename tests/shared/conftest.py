"""The API as a client meets it, on AWS and on GCP, from one set of tests.

``api`` is parametrized over ["aws", "gcp"]; ``both`` gives the two side by side:

- aws: the Lambda the route table names for a route (functions/<aws_function>/app.py), called in
  process with an API Gateway REST proxy event built from events/predict_proxy_one_stone.json,
  against DynamoDB and SQS on moto (tables and queue from template.yaml) and the serving process
  at the SageMaker runtime path. A caller who is not signed in has no authorizer claims.
- gcp: the one ``api`` Cloud Function under functions-framework over HTTP, with an ID token of
  the Firebase Auth emulator (accounts:signInWithPassword), against the Firestore emulator and
  the same serving process at the Vertex AI path.

Both read the same model registry and the same stones, so the answers must be the same, and so
must the records they write to the prediction log.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from gemcast.aws import from_item
from gemcast.gcp import FirestoreInventory, from_document
from gemcast.inventory import DynamoInventory
from gemcast.routes import find
from gemcast_local.gcp_stack import ServingProcess
from gemcast_local.invoke import load_event
from gemcast_local.provision import provision
from gemcast_local.runtime import import_handler
from gemcast_local.template import load_template
from tests.shared.fixtures import GcpTestEnv, Identity
from tests.shared.stack import gcp_event

REPO = Path(__file__).resolve().parents[2]
# The headers a client reads; the rest (Date, Server, Content-Length) belong to the transport.
CONTRACT_HEADERS = ("content-type", "x-model-version", "retry-after")


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class Api:
    cloud: str
    call: Callable[..., Answer]  # call(method, path, *, signed_in=True, body=None, query=None)
    records: Callable[[], list[dict[str, Any]]]  # the prediction log, oldest first
    load: Callable[[Iterable[Mapping[str, Any]]], int]

    def predict(self, body: str) -> tuple[int, dict[str, Any]]:
        answer = self.call("POST", "/v1/predictions", body=body)
        return answer.status, answer.body

    def similar(self, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        answer = self.call("GET", "/v1/diamonds/similar", query=query)
        return answer.status, answer.body


def _contract_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    return {name: lowered[name] for name in CONTRACT_HEADERS if name in lowered}


def aws_api(monkeypatch: pytest.MonkeyPatch, serving: ServingProcess, model_registry: str,
            lambda_context: Any) -> Api:
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
    handlers: dict[str, Any] = {}
    base = load_event("predict_proxy_one_stone.json")
    counter = iter(range(1, 1_000_000))

    def call(method: str, path: str, *, signed_in: bool = True, body: str | None = None,
             query: Mapping[str, str] | None = None) -> Answer:
        route, _ = find(method, path)
        assert route is not None, f"{method} {path} is not in the route table"
        if route.aws_function not in handlers:
            handlers[route.aws_function] = import_handler(route.aws_function, {})
        event = copy.deepcopy(base)
        event.update(resource=route.path, path=route.path, httpMethod=route.method, body=body,
                     queryStringParameters=dict(query) if query else None,
                     multiValueQueryStringParameters={k: [v] for k, v in query.items()} if query else None)
        context = event["requestContext"]
        context.update(resourcePath=route.path, httpMethod=route.method,
                       requestId=f"parity-{next(counter):06d}")
        if not signed_in:
            context["authorizer"] = {}
            event["headers"].pop("Authorization", None)
            event["multiValueHeaders"].pop("Authorization", None)
        response = handlers[route.aws_function].lambda_handler(event, lambda_context)
        headers = {**{k: v[0] for k, v in (response.get("multiValueHeaders") or {}).items()},
                   **(response.get("headers") or {})}
        return Answer(int(response["statusCode"]), json.loads(response["body"]), _contract_headers(headers))

    def records() -> list[dict[str, Any]]:
        items = dynamodb.Table(values["PredictionLogTable"]).scan()["Items"]
        return sorted((from_item(item) for item in items), key=lambda r: str(r["request_id"]))

    inventory = DynamoInventory(values["InventoryTable"], resource=dynamodb)
    return Api("aws", call, records, inventory.put_stones)


def gcp_api(env: GcpTestEnv, identity: Identity) -> Api:
    token = identity.id_token()

    def call(method: str, path: str, *, signed_in: bool = True, body: str | None = None,
             query: Mapping[str, str] | None = None) -> Answer:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if signed_in:
            headers["Authorization"] = f"Bearer {token}"
        response = requests.request(method, env.url("api") + path, headers=headers, params=query,
                                    data=body.encode() if body is not None else None, timeout=60)
        return Answer(response.status_code, response.json(), _contract_headers(response.headers))

    def records() -> list[dict[str, Any]]:
        docs = [from_document(snap.to_dict()) for snap in env.firestore.collection("predictions").stream()]
        return sorted(docs, key=lambda r: str(r["created_at"]))

    return Api("gcp", call, records, FirestoreInventory(env.firestore, "inventory").put_stones)


@pytest.fixture(params=["aws", "gcp"])
def api(request: pytest.FixtureRequest) -> Api:
    request.getfixturevalue("aws_env")  # boto3 in this process must never reach a real account
    if request.param == "aws":
        return aws_api(request.getfixturevalue("monkeypatch"), request.getfixturevalue("serving"),
                       request.getfixturevalue("model_registry"), request.getfixturevalue("lambda_context"))
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


__all__ = ["Answer", "Api", "body_of", "query_of"]
