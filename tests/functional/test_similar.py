"""similar driven by its events/ files, on moto: the inventory table of template.yaml, loaded from
the bundled data; two key-condition queries per request and never a scan."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

from gemcast.aws import from_item
from gemcast.cleaning import clean_csv
from gemcast.inventory import DynamoInventory
from gemcast_local.provision import provision
from gemcast_local.runtime import function_environment, import_handler
from gemcast_local.servers import MotoServer
from gemcast_local.template import load_template

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
# The groups the events ask about (plus one neighbour), not all 5,000 stones: seconds, not minutes.
GROUPS = {("Ideal", "E", "VS1"), ("Good", "D", "IF"), ("Ideal", "E", "VS2")}


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer) -> Iterator[dict[str, Any]]:
    moto_server.reset()
    env = moto_server.env()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        template = load_template(REPO / "template.yaml")
        values = provision(template, boto3.client, env["AWS_DEFAULT_REGION"])
        stones = [
            s
            for s in clean_csv((REPO / "data" / "diamonds.csv").read_bytes(), source="diamonds.csv").accepted
            if (s["cut"], s["color"], s["clarity"]) in GROUPS
        ]
        DynamoInventory(values["InventoryTable"], resource=boto3.resource("dynamodb")).put_stones(stones)
        yield {
            "values": values,
            "stones": stones,
            "env": {**env, **function_environment(template, "SimilarFunction", values)},
        }


@pytest.fixture
def load_similar(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Callable[[], ModuleType]:
    def load() -> ModuleType:
        for name, value in stack["env"].items():
            monkeypatch.setenv(name, value)
        return import_handler("similar", {})

    return load


def invoke(app: ModuleType, event: dict[str, Any], context: Any) -> tuple[int, dict[str, Any]]:
    response = app.lambda_handler(event, context)
    return response["statusCode"], json.loads(response["body"])


def test_n_nearest_carats_of_the_same_grades_with_two_queries_and_no_scan(
    load_similar: Callable[[], ModuleType], stack: dict[str, Any], lambda_context: Any
) -> None:
    app = load_similar()
    calls: list[str] = []
    events = app.DEPS.inventory.table.meta.client.meta.events
    events.register("before-call.dynamodb.Query", lambda **kw: calls.append("Query"))
    events.register("before-call.dynamodb.Scan", lambda **kw: calls.append("Scan"))
    status, body = invoke(app, load_event("similar_five"), lambda_context)
    assert status == 200
    assert calls == ["Query", "Query"]
    assert body["count"] == 5 and "note" not in body
    group = [s for s in stack["stones"] if (s["cut"], s["color"], s["clarity"]) == ("Ideal", "E", "VS1")]
    expected = sorted(abs(s["carat"] - 0.7) for s in group)[:5]
    assert [round(abs(s["carat"] - 0.7), 4) for s in body["stones"]] == [round(d, 4) for d in expected]
    assert all(
        (s["cut"], s["color"], s["clarity"]) == ("Ideal", "E", "VS1") and s["price"] > 0
        for s in body["stones"]
    )


def test_a_small_group_returns_what_it_has_and_says_so(
    load_similar: Callable[[], ModuleType], lambda_context: Any
) -> None:
    status, body = invoke(load_similar(), load_event("similar_rare_group"), lambda_context)
    assert status == 200
    assert body["count"] == 1 and len(body["stones"]) == 1
    assert "fewer than the 10 asked" in body["note"]


def test_unknown_categories_are_a_400_naming_them(
    load_similar: Callable[[], ModuleType], lambda_context: Any
) -> None:
    status, body = invoke(load_similar(), load_event("similar_unknown_category"), lambda_context)
    assert status == 400
    assert set(body["error"]["fields"]) == {"cut", "clarity"}
    assert "Excellent" in body["error"]["fields"]["cut"] and "VS3" in body["error"]["fields"]["clarity"]


def test_queries_and_answers_go_to_the_prediction_log(
    load_similar: Callable[[], ModuleType], stack: dict[str, Any], lambda_context: Any
) -> None:
    event = copy.deepcopy(load_event("similar_five"))
    event["requestContext"]["requestId"] = "similar-logged-1"
    status, body = invoke(load_similar(), event, lambda_context)
    table = boto3.resource("dynamodb").Table(stack["values"]["PredictionLogTable"])
    record = from_item(table.get_item(Key={"request_id": "similar-logged-1"})["Item"])
    assert record["route"] == "GET /v1/diamonds/similar" and record["status"] == status == 200
    assert record["caller"] == event["requestContext"]["authorizer"]["claims"]["sub"]
    assert record["request"]["query"]["cut"] == "Ideal" and record["response"]["count"] == body["count"]
