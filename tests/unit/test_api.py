"""The prediction API without any cloud: validation, endpoint failures, logging, the OpenAPI
document (built from the same constants as validation), the model summary and the metrics."""

from __future__ import annotations

import json
import math
from typing import Any

import jsonschema
import pytest

from gemcast import openapi
from gemcast.api import handle_predictions
from gemcast.errors import EndpointError, NotFoundError
from gemcast.metrics import record_request
from gemcast.models_info import current_model
from gemcast.openapi import document, stone_schema
from gemcast.predict import MAX_BATCH
from gemcast.registry import ModelPackage, Registry
from gemcast.schema import CATEGORIES, EXAMPLE_STONE, EXCLUSIVE_LOW, FEATURES, RANGES, check_stone

STONE = EXAMPLE_STONE


class FakeEndpoint:
    def __init__(self, error: EndpointError | None = None, extra: int = 0) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.error = error
        self.extra = extra

    def invoke(self, instances: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(instances)
        if self.error:
            raise self.error
        preds = [{"price": 1000.0 + 100 * s["carat"], "base_price": 900.0, "reasons": []} for s in instances]
        return {"predictions": preds + preds[: self.extra], "model_version": "v1"}


class ListLog:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> bool:
        self.records.append(record)
        return True


def predict(body: Any, endpoint: FakeEndpoint | None = None) -> tuple[Any, ListLog, FakeEndpoint]:
    endpoint = endpoint or FakeEndpoint()
    log = ListLog()
    text = body if isinstance(body, str) else json.dumps(body)
    response = handle_predictions(text, request_id="req-1", caller="user-sub", endpoint=endpoint, log=log)
    return response, log, endpoint


def test_one_stone_is_priced_and_logged_with_the_caller() -> None:
    response, log, _ = predict(STONE)
    assert response.status == 200
    assert response.body["price"] == pytest.approx(1070.0)
    assert response.body["model_version"] == "v1" and response.body["request_id"] == "req-1"
    (record,) = log.records
    assert record["caller"] == "user-sub" and record["status"] == 200 and record["model_version"] == "v1"
    assert record["request"] == STONE and record["response"] == response.body
    assert record["route"] == "POST /v1/predictions" and record["expires_at"] > 0


def test_a_list_prices_the_valid_stones_and_names_the_invalid_ones_in_order() -> None:
    bad = {**STONE, "color": "Z"}
    response, log, endpoint = predict([STONE, bad, {**STONE, "carat": 0.71}])
    assert response.status == 200
    first, second, third = response.body["predictions"]
    assert first["price"] == pytest.approx(1070.0) and third["price"] == pytest.approx(1071.0)
    assert set(second["error"]["fields"]) == {"color"}
    assert len(endpoint.calls[0]) == 2  # the invalid stone never reaches the model
    assert log.records[0]["status"] == 200


def test_a_bad_single_stone_is_a_400_naming_every_field_and_is_logged() -> None:
    response, log, endpoint = predict({**STONE, "carat": -1, "cut": "Excellent", "z": None})
    assert response.status == 400
    assert {"carat", "cut", "z"} <= set(response.body["error"]["fields"])
    assert not endpoint.calls
    assert log.records[0]["status"] == 400


def test_bad_json_is_a_400_and_the_raw_body_is_logged() -> None:
    response, log, _ = predict('{"carat": 0.7,')
    assert response.status == 400 and "body" in response.body["error"]["fields"]
    assert log.records[0]["request"] == {"unparsed_body": '{"carat": 0.7,'}


def test_too_many_stones_is_a_400() -> None:
    response, _, endpoint = predict([STONE] * (MAX_BATCH + 1))
    assert response.status == 400 and not endpoint.calls


def test_an_unreachable_endpoint_is_a_503_with_retry_after_and_still_logged() -> None:
    response, log, _ = predict(STONE, FakeEndpoint(EndpointError("connection refused", status=503)))
    assert response.status == 503 and response.headers["Retry-After"]
    assert "connection refused" not in json.dumps(response.body)  # no internals to the caller
    assert log.records[0]["status"] == 503


def test_an_endpoint_answer_of_the_wrong_length_is_a_502() -> None:
    response, _, _ = predict([STONE, STONE], FakeEndpoint(extra=1))
    assert response.status == 502


# ----------------------------------------------------------------------------- OpenAPI


def test_the_document_names_every_feature_with_the_validation_constants() -> None:
    schema = stone_schema()
    assert schema["required"] == list(FEATURES)
    for name in FEATURES:
        prop = schema["properties"][name]
        if name in CATEGORIES:
            assert prop["enum"] == list(CATEGORIES[name])
        else:
            low, high = RANGES[name]
            assert prop["maximum"] == high
            assert prop.get("exclusiveMinimum" if name in EXCLUSIVE_LOW else "minimum") == low


def _field_problem(stone: dict[str, Any], name: str) -> bool:
    """Whether validation finds the field itself wrong (type, range, grade, missing).

    Checked on the field alone: with the other fields missing, no consistency rule between
    measurements (which a JSON schema cannot express) applies.
    """
    _, problems = check_stone({name: stone[name]} if name in stone else {})
    return any(p.field == name for p in problems)


@pytest.mark.parametrize("name", [f for f in FEATURES if f not in CATEGORIES])
def test_validation_and_the_document_agree_at_every_range_edge(name: str) -> None:
    validator = jsonschema.Draft202012Validator(stone_schema())
    low, high = RANGES[name]
    for value in (
        low,
        math.nextafter(low, -math.inf),
        math.nextafter(low, math.inf),
        high,
        math.nextafter(high, math.inf),
        high + 1,
        low - 1,
    ):
        stone = {**STONE, name: value}
        document_ok = not any(list(e.path) == [name] for e in validator.iter_errors(stone))
        assert document_ok == (not _field_problem(stone, name)), (name, value)


@pytest.mark.parametrize("name", list(CATEGORIES))
def test_validation_and_the_document_agree_on_grades(name: str) -> None:
    validator = jsonschema.Draft202012Validator(stone_schema())
    for grade in [*CATEGORIES[name], "Excellent", "Z9", ""]:
        stone = {**STONE, name: grade}
        document_ok = not any(list(e.path) == [name] for e in validator.iter_errors(stone))
        assert document_ok == (not _field_problem(stone, name)), (name, grade)
    # A missing field is refused by both.
    stone = {k: v for k, v in STONE.items() if k != name}
    assert not validator.is_valid(stone) and _field_problem(stone, name)


def test_the_request_schema_takes_what_the_api_takes() -> None:
    doc = document()
    request = {"$ref": "#/components/schemas/PredictionRequest", "components": doc["components"]}
    validator = jsonschema.Draft202012Validator(request)
    assert (
        validator.is_valid(STONE)
        and validator.is_valid([STONE, STONE])
        and validator.is_valid({"instances": [STONE]})
    )
    assert not validator.is_valid([]) and not validator.is_valid([STONE] * (MAX_BATCH + 1))


def test_every_reference_of_the_document_resolves() -> None:
    doc = document()
    text = json.dumps(doc)
    refs = {part.split('"')[0] for part in text.split('"$ref": "')[1:]}
    assert refs
    for ref in refs:
        node: Any = doc
        for key in ref.removeprefix("#/").split("/"):
            node = node[key]
    assert set(doc["paths"]) >= {
        "/v1/predictions",
        "/v1/models/current",
        "/v1/predictions/mine",
        "/v1/diamonds/similar",
        "/v1/openapi.json",
        "/v1/health",
    }
    assert doc["paths"]["/v1/health"]["get"]["security"] == []


# ----------------------------------------------------------------------------- model summary, metrics


def test_current_model_reports_version_metrics_and_training_data(tmp_path: Any) -> None:
    registry = Registry((tmp_path / "models").as_uri())
    with pytest.raises(NotFoundError, match="no model"):
        current_model(registry)
    manifest = {
        "version": "20260101T000000Z-abc123",
        "created": "2026-01-01T00:00:00Z",
        "data": {"snapshot_id": "snap-1", "rows": 5000, "accepted": 4983},
        "metrics": {"holdout": {"mae": 250.0, "mape": 7.5}},
        "model": {"kind": "gbm"},
    }
    registry.publish(ModelPackage({"model.npz": b"not really a model"}, manifest))
    registry.promote("20260101T000000Z-abc123", reason="first")
    info = current_model(registry)
    assert info["version"] == "20260101T000000Z-abc123" and info["metrics"]["mae"] == 250.0
    assert (
        info["trained_on"]["snapshot_id"] == "snap-1" and info["trained_on"]["date"] == "2026-01-01T00:00:00Z"
    )
    assert info["trained_on"]["rows"] == 5000 and info["kind"] == "gbm"


def test_model_history_is_newest_first_with_metrics_data_gate_and_the_champion(tmp_path: Any) -> None:
    from gemcast.models_info import model_history

    registry = Registry((tmp_path / "models").as_uri())
    for version, mae, promote in (("20260101T000000Z-aaa111", 300.0, True), ("20260201T000000Z-bbb222", 320.0, False)):
        registry.publish(ModelPackage({"model.npz": b"x"}, {
            "version": version, "created": version[:8], "data": {"snapshot_id": f"snap-{mae:g}", "accepted": 4983},
            "metrics": {"holdout": {"mae": mae, "mape": mae / 40}}, "model": {"kind": "gbm"},
            "gate": {"promote": promote, "metric": "mae", "reason": f"gate said {promote}"}}))
    registry.promote("20260101T000000Z-aaa111", reason="first")

    history = model_history(registry)

    assert history["champion"] == "20260101T000000Z-aaa111" and history["count"] == 2
    newest, oldest = history["models"]
    assert newest["version"] == "20260201T000000Z-bbb222" and not newest["champion"]
    assert newest["gate"] == {"promote": False, "metric": "mae", "reason": "gate said False"}
    assert oldest["champion"] and oldest["metrics"]["mape"] == 7.5
    assert oldest["trained_on"]["snapshot_id"] == "snap-300" and oldest["trained_on"]["accepted"] == 4983
    assert oldest["last_promoted_at"]


# ----------------------------------------------------------------------------- respond: every route
def test_a_route_that_needs_a_caller_refuses_an_anonymous_one_before_anything_runs() -> None:
    from gemcast.api import ApiRequest, StaticDeps, respond
    from gemcast.routes import by_operation

    endpoint, log = FakeEndpoint(), ListLog()
    answer = respond(by_operation("createPrediction"), ApiRequest("POST", "/v1/predictions", body=json.dumps(STONE)),
                     StaticDeps(endpoint=endpoint, log=log))

    assert answer.status == 401 and answer.body["error"]["fields"] == {
        "Authorization": "missing, expired or not an ID token of this API"}
    assert endpoint.calls == [] and log.records == []


def test_a_refused_token_is_answered_as_the_templates_unauthorized_gateway_response() -> None:
    """The Lambdas never see a refused token on AWS (the Cognito authorizer answers with the
    UNAUTHORIZED gateway response); the GCP doorway answers it itself: the two must be one body."""
    from pathlib import Path

    from gemcast.api import unauthorized
    from gemcast_local.template import load_template

    template = load_template(Path(__file__).resolve().parents[2] / "template.yaml")
    api = template["Resources"]["GemcastApi"]["Properties"]["GatewayResponses"]["UNAUTHORIZED"]
    rendered = api["ResponseTemplates"]["application/json"].replace("$context.requestId", "req-1")
    answer = unauthorized("req-1")

    assert (api["StatusCode"], json.loads(rendered)) == (answer.status, answer.body)
    assert api["ResponseParameters"]["Headers"]["WWW-Authenticate"] == f"'{answer.headers['WWW-Authenticate']}'"


def test_every_operation_documents_what_the_gateway_answers_itself() -> None:
    for path, operations in document()["paths"].items():
        for method, operation in operations.items():
            documented = operation["responses"]
            assert {"403", "429", "5XX"} <= set(documented), (method, path)
            assert ("413" in documented) == ("requestBody" in operation), (method, path)


def test_respond_turns_errors_into_answers_and_logs_the_logged_routes() -> None:
    from gemcast.api import ApiRequest, StaticDeps, respond
    from gemcast.routes import by_operation

    log = ListLog()
    down = StaticDeps(endpoint=FakeEndpoint(EndpointError("refused", status=503)), log=log)
    priced = ApiRequest("POST", "/v1/predictions", body=json.dumps(STONE), caller="u-1", request_id="r-1")
    answer = respond(by_operation("createPrediction"), priced, down)
    bad_query = respond(by_operation("listSimilarDiamonds"),
                        ApiRequest("GET", "/v1/diamonds/similar", query={"carat": "x"}, caller="u-1", request_id="r-2"),
                        StaticDeps(inventory=None, log=log))

    assert answer.status == 503 and answer.all_headers()["Retry-After"] == "5"
    assert answer.body == {"error": {"message": "the model endpoint is unavailable; try again shortly"},
                           "request_id": "r-1"}
    assert bad_query.status == 400 and set(bad_query.body["error"]["fields"]) >= {"carat", "cut"}
    assert [(r["route"], r["status"], r["request_id"]) for r in log.records] == [
        ("POST /v1/predictions", 503, "r-1"), ("GET /v1/diamonds/similar", 400, "r-2")]
    assert log.records[1]["request"] == {"query": {"carat": "x"}}


def test_the_document_has_one_operation_per_route_of_the_table() -> None:
    from gemcast.routes import ROUTES

    paths = document()["paths"]
    operations = {(method.upper(), path): op for path, ops in paths.items() for method, op in ops.items()}
    assert set(operations) == {(r.method, r.path) for r in ROUTES}
    for route in ROUTES:
        op = operations[(route.method, route.path)]
        assert op["operationId"] == route.operation_id and bool(op["security"]) == route.auth
        gateway = set(openapi.gateway_responses(route))  # the gateway's own answers, on every route
        assert set(op["responses"]) == {str(s) for s in route.responses} | gateway


class RecordingMetrics:
    def __init__(self) -> None:
        self.dimensions: dict[str, str] = {}
        self.values: dict[str, float] = {}

    def add_dimension(self, name: str, value: str) -> None:
        self.dimensions[name] = value

    def add_metric(self, name: str, unit: Any, value: float) -> None:
        self.values[name] = value


def test_request_metrics_are_by_route_and_model_version() -> None:
    metrics = RecordingMetrics()
    event = {"httpMethod": "POST", "resource": "/v1/predictions", "path": "/v1/predictions"}
    response = {"statusCode": 503, "multiValueHeaders": {"X-Model-Version": ["v7"]}}
    record_request(metrics, event, response, started=1.0, now=1.25)
    assert metrics.dimensions == {"route": "POST /v1/predictions", "model_version": "v7"}
    assert metrics.values == {"Requests": 1, "LatencyMs": 250.0, "ClientErrors": 0, "ServerErrors": 1}
