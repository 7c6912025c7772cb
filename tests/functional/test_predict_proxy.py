"""predict_proxy driven by its events/ files, on moto, with a real serving process as the endpoint.

The tables, queue and bucket come from template.yaml (the local stack's own code creates
them), and so does the function's environment; the handler's boto3 ``sagemaker-runtime``
client reaches ``gemcast serve`` through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` alone.
"""

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
from gemcast.pipeline import run_training
from gemcast_local.provision import provision
from gemcast_local.runtime import function_environment, import_handler
from gemcast_local.servers import MotoServer, free_port
from gemcast_local.stack import ModelServer
from gemcast_local.template import load_template

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
SUB = "7d8ca528-4931-4254-9273-ea5ee853f271"  # the caller of the events files


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def as_caller(event: dict[str, Any], sub: str, request_id: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    event["requestContext"]["authorizer"]["claims"]["sub"] = sub
    event["requestContext"]["requestId"] = request_id
    return event


@pytest.fixture(scope="module")
def stack(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The template's resources on moto, a champion in the bucket's registry, and its server."""
    moto_server.reset()
    env = moto_server.env()
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        template = load_template(REPO / "template.yaml")
        values = provision(template, boto3.client, env["AWS_DEFAULT_REGION"])
        registry = f"s3://{values['DataBucket']}/models"
        outcome = run_training(str(REPO / "data" / "diamonds.csv"), registry, kind="linear")
    with ModelServer(registry, workers=1, extra_env=env) as server:
        function_env = function_environment(template, "PredictProxyFunction", values)
        yield {
            "values": values,
            "env": {**env, **function_env, **server.env()},
            "version": outcome.version,
            "server": server,
        }


@pytest.fixture
def load_proxy(stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Callable[..., ModuleType]:
    """Import the function afresh (its cold start) with the template's environment, plus overrides."""

    def load(**overrides: str) -> ModuleType:
        for name, value in {**stack["env"], **overrides}.items():
            monkeypatch.setenv(name, value)
        return import_handler("predict_proxy", {})

    return load


def invoke(
    app: ModuleType, event: dict[str, Any], context: Any
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    response = app.lambda_handler(event, context)
    headers = {k: v[0] for k, v in (response.get("multiValueHeaders") or {}).items()}
    headers.update(response.get("headers") or {})
    return response["statusCode"], json.loads(response["body"]), headers


def logged(stack: dict[str, Any], request_id: str) -> dict[str, Any] | None:
    table = boto3.resource("dynamodb", **_moto(stack)).Table(stack["values"]["PredictionLogTable"])
    item = table.get_item(Key={"request_id": request_id}).get("Item")
    return from_item(item) if item else None


def _moto(stack: dict[str, Any]) -> dict[str, str]:
    env = stack["env"]
    return {
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "region_name": env["AWS_DEFAULT_REGION"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
    }


def test_one_stone_is_priced_and_logged(
    load_proxy: Callable[..., ModuleType],
    stack: dict[str, Any],
    lambda_context: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    event = load_event("predict_proxy_one_stone")
    status, body, headers = invoke(load_proxy(), event, lambda_context)
    assert status == 200
    assert 1000 < body["price"] < 10000 and body["reasons"]
    assert body["model_version"] == stack["version"] == headers["X-Model-Version"]
    request_id = event["requestContext"]["requestId"]
    assert body["request_id"] == request_id
    record = logged(stack, request_id)
    assert record is not None
    assert record["caller"] == SUB and record["status"] == 200 and record["model_version"] == stack["version"]
    assert record["request"]["carat"] == 0.7 and record["response"]["price"] == body["price"]
    # Metrics by route and model version, on stdout as CloudWatch EMF.
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert any(
        m.get("route") == "POST /v1/predictions"
        and m.get("model_version") == stack["version"]
        and m.get("Requests") == [1.0]
        for m in emf
    )


def test_a_list_with_one_invalid_stone_prices_the_others(
    load_proxy: Callable[..., ModuleType], lambda_context: Any
) -> None:
    status, body, _ = invoke(load_proxy(), load_event("predict_proxy_list_with_invalid"), lambda_context)
    assert status == 200
    first, second, third = body["predictions"]
    assert first["price"] > 0 and third["price"] > first["price"]
    assert {"color", "depth"} <= set(second["error"]["fields"])


def test_a_bad_stone_is_a_400_naming_its_fields(
    load_proxy: Callable[..., ModuleType], stack: dict[str, Any], lambda_context: Any
) -> None:
    event = load_event("predict_proxy_bad_stone")
    status, body, _ = invoke(load_proxy(), event, lambda_context)
    assert status == 400
    assert {"carat", "cut", "z"} <= set(body["error"]["fields"])
    record = logged(stack, event["requestContext"]["requestId"])
    assert record is not None and record["status"] == 400


def test_bad_json_is_a_400(load_proxy: Callable[..., ModuleType], lambda_context: Any) -> None:
    status, body, _ = invoke(load_proxy(), load_event("predict_proxy_bad_json"), lambda_context)
    assert status == 400
    assert "JSON" in body["error"]["message"] and "body" in body["error"]["fields"]


def test_a_stopped_endpoint_is_a_503_and_still_logged(
    load_proxy: Callable[..., ModuleType], stack: dict[str, Any], lambda_context: Any
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    event = as_caller(load_event("predict_proxy_one_stone"), SUB, "0f1e2d3c-0503-4a5b-8c7d-000000000503")
    status, body, headers = invoke(
        load_proxy(AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=nobody), event, lambda_context
    )
    assert status == 503 and headers["Retry-After"]
    assert "unavailable" in body["error"]["message"] and "127.0.0.1" not in json.dumps(body)
    record = logged(stack, "0f1e2d3c-0503-4a5b-8c7d-000000000503")
    assert record is not None and record["status"] == 503


def test_a_failed_log_write_goes_to_the_dead_letter_queue(
    load_proxy: Callable[..., ModuleType],
    stack: dict[str, Any],
    lambda_context: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app = load_proxy(PREDICTION_LOG_TABLE="gemcast-local-no-such-table")
    event = as_caller(load_event("predict_proxy_one_stone"), SUB, "0f1e2d3c-0dlq-4a5b-8c7d-00000000dlq1")
    status, body, _ = invoke(app, event, lambda_context)
    assert status == 200 and body["price"] > 0  # the caller still gets the price
    sqs = boto3.client("sqs", **_moto(stack))
    messages = sqs.receive_message(
        QueueUrl=stack["values"]["PredictionLogDLQ"], MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", [])
    records = [json.loads(m["Body"]) for m in messages]
    assert any(
        r["request_id"] == "0f1e2d3c-0dlq-4a5b-8c7d-00000000dlq1" and r["response"]["price"] == body["price"]
        for r in records
    )
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert any(m.get("PredictionLogDeadLettered") == [1.0] for m in emf)


def test_models_current_names_the_champion_and_its_data(
    load_proxy: Callable[..., ModuleType], stack: dict[str, Any], lambda_context: Any
) -> None:
    status, body, _ = invoke(load_proxy(), load_event("predict_proxy_current_model"), lambda_context)
    assert status == 200
    assert body["version"] == stack["version"] and body["kind"] == "linear"
    assert body["metrics"]["mae"] > 0 and body["metrics"]["n"] > 0
    assert body["trained_on"]["snapshot_id"].startswith("snap-") and body["trained_on"]["rows"] > 4000
    assert body["trained_on"]["date"]


def test_the_model_card_and_its_plot_are_served(
    load_proxy: Callable[..., ModuleType], stack: dict[str, Any], lambda_context: Any
) -> None:
    status, body, _ = invoke(load_proxy(), load_event("predict_proxy_current_model_card"), lambda_context)
    assert status == 200
    assert body["version"] == stack["version"]
    assert body["markdown"].startswith(f"# gemcast model {stack['version']}")
    assert body["plot_svg"].startswith("<svg")


def test_mine_lists_only_the_callers_own_requests(
    load_proxy: Callable[..., ModuleType], lambda_context: Any
) -> None:
    app = load_proxy()
    stone = load_event("predict_proxy_one_stone")
    for i, sub in enumerate(["alice-sub", "bob-sub", "alice-sub"]):
        invoke(app, as_caller(stone, sub, f"mine-{i}"), lambda_context)
    mine = as_caller(load_event("predict_proxy_mine"), "alice-sub", "mine-query")
    status, body, _ = invoke(app, mine, lambda_context)
    assert status == 200
    assert body["count"] == 2 and {r["request_id"] for r in body["predictions"]} == {"mine-0", "mine-2"}
    assert all(r["caller"] == "alice-sub" for r in body["predictions"])
    assert body["predictions"][0]["created_at"] >= body["predictions"][1]["created_at"]  # newest first


def test_openapi_and_health_answer_without_a_caller(
    load_proxy: Callable[..., ModuleType], lambda_context: Any
) -> None:
    app = load_proxy()
    status, doc, _ = invoke(app, load_event("predict_proxy_openapi"), lambda_context)
    assert status == 200 and doc["openapi"].startswith("3.")
    assert doc["components"]["schemas"]["Stone"]["required"][0] == "carat"
    status, health, _ = invoke(app, load_event("predict_proxy_health"), lambda_context)
    assert status == 200 and health["status"] == "ok"
