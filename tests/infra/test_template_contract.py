"""What the code and the local stack rely on in template.yaml: names, keys, routes, wiring."""

from __future__ import annotations

import re
from typing import Any

import pytest

from gemcast import config
from gemcast.routes import ROUTES
from gemcast_local.gateway import template_disagreements
from gemcast_local.template import load_template, resources_of_type
from tests.infra.tools import TEMPLATE

FUNCTIONS = {
    "PredictProxyFunction": "predict_proxy",
    "SimilarFunction": "similar",
    "PreprocessFunction": "preprocess",
    "ScheduleTriggerFunction": "schedule_trigger",
    "DeployModelFunction": "deploy_model",
    "AuthPreSignupFunction": "auth_pre_signup",
    "AuthPostConfirmationFunction": "auth_post_confirmation",
    "AuthPreTokenFunction": "auth_pre_token",
    "DriftCheckFunction": "drift_check",
}

# The settings each function reads; the template must set them (and config.py name them).
NEEDS = {
    "PredictProxyFunction": {"ENDPOINT_NAME", "PREDICTION_LOG_TABLE", "LOG_DLQ_URL", "REGISTRY_URI"},
    "SimilarFunction": {"INVENTORY_TABLE"},
    "PreprocessFunction": {"DATA_BUCKET", "INVENTORY_TABLE"},
    "ScheduleTriggerFunction": {"DATA_BUCKET", "REGISTRY_URI", "BATCH_JOB_QUEUE", "BATCH_JOB_DEFINITION"},
    "DeployModelFunction": {
        "REGISTRY_URI",
        "ENDPOINT_NAME",
        "SERVING_IMAGE_URI",
        "SAGEMAKER_ROLE_ARN",
        "ENDPOINT_MODE",
        "ENDPOINT_INSTANCE_TYPE",
        "ROLLBACK_ALARM_NAMES",
    },
    "AuthPreSignupFunction": {"ALLOWED_EMAIL_DOMAINS", "AUTO_CONFIRM"},
    "AuthPostConfirmationFunction": {"USERS_TABLE", "DEFAULT_TIER"},
    "AuthPreTokenFunction": {"USERS_TABLE", "DEFAULT_TIER"},
    "DriftCheckFunction": {"DATA_BUCKET", "REGISTRY_URI", "PREDICTION_LOG_TABLE", "DRIFT_THRESHOLD"},
}



@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def _config_names() -> set[str]:
    return {v for k, v in vars(config).items() if k.isupper() and isinstance(v, str)}


def test_every_function_is_declared_the_house_way(template: dict[str, Any]) -> None:
    functions = dict(resources_of_type(template, "AWS::Serverless::Function"))
    assert set(functions) == set(FUNCTIONS)
    globals_ = template["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.12"
    assert globals_["Tracing"] == "Active"
    assert globals_["LoggingConfig"]["LogFormat"] == "JSON"
    assert globals_["Environment"]["Variables"]["POWERTOOLS_METRICS_NAMESPACE"] == "gemcast"
    for logical_id, props in functions.items():
        assert props["CodeUri"] == f"functions/{FUNCTIONS[logical_id]}/"
        assert props["Handler"] == "app.lambda_handler"
        assert {"Ref": "GemcastLayer"} in props["Layers"], logical_id
        assert props["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] == FUNCTIONS[logical_id]


def test_environment_names_come_from_config(template: dict[str, Any]) -> None:
    known = _config_names()
    for logical_id, props in resources_of_type(template, "AWS::Serverless::Function"):
        names = set(props["Environment"]["Variables"])
        unknown = {n for n in names if not n.startswith("POWERTOOLS_")} - known
        assert not unknown, f"{logical_id} sets variables config.py does not know: {sorted(unknown)}"
        assert NEEDS[logical_id] <= names, f"{logical_id} lacks {sorted(NEEDS[logical_id] - names)}"


def test_values_reach_functions_through_the_template(template: dict[str, Any]) -> None:
    """Resource names are !Ref/!GetAtt/!Sub, never literals typed into the template."""
    literal_ok = {"POWERTOOLS_SERVICE_NAME"}
    for logical_id, props in resources_of_type(template, "AWS::Serverless::Function"):
        for name, value in props["Environment"]["Variables"].items():
            if name in literal_ok:
                continue
            assert isinstance(value, dict), f"{logical_id}.{name} is a literal: {value!r}"


def test_registry_uri_is_the_models_prefix_of_the_data_bucket(template: dict[str, Any]) -> None:
    for logical_id, props in resources_of_type(template, "AWS::Serverless::Function"):
        value = props["Environment"]["Variables"].get("REGISTRY_URI")
        if value is not None:
            assert re.fullmatch(
                r"s3://\$\{DataBucket\}/models|s3://gemcast-\$\{Stage\}-data-.*/models", value["Fn::Sub"]
            ), logical_id


def test_table_keys(template: dict[str, Any]) -> None:
    tables = dict(resources_of_type(template, "AWS::DynamoDB::Table"))

    def keys(props: dict[str, Any]) -> list[tuple[str, str]]:
        return [(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]]

    assert keys(tables["PredictionLogTable"]) == [("request_id", "HASH")]
    (index,) = tables["PredictionLogTable"]["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by_caller"
    assert keys(index) == [("caller", "HASH"), ("created_at", "RANGE")]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    assert tables["PredictionLogTable"]["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    assert keys(tables["InventoryTable"]) == [("stone_group", "HASH"), ("carat_key", "RANGE")]
    assert keys(tables["UsersTable"]) == [("user_id", "HASH")]
    assert keys(tables["IdempotencyTable"]) == [("id", "HASH")]
    assert tables["IdempotencyTable"]["TimeToLiveSpecification"]["AttributeName"] == "expiration"
    for logical_id, props in tables.items():
        assert props["BillingMode"] == "PAY_PER_REQUEST", logical_id
        assert props["SSESpecification"]["SSEEnabled"] is True, logical_id
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, logical_id
        for attribute in props["AttributeDefinitions"]:
            assert attribute["AttributeType"] == "S", logical_id


def test_api_routes_are_those_of_the_route_table(template: dict[str, Any]) -> None:
    """template.yaml's Api events: every route of gemcast.routes, on the function the table names,
    guarded by the Cognito authorizer unless the table says the route is public; no other."""
    api = template["Resources"]["GemcastApi"]["Properties"]
    assert api["Auth"]["DefaultAuthorizer"] == "CognitoAuthorizer"
    for event in (e for _, props in resources_of_type(template, "AWS::Serverless::Function")
                  for e in (props.get("Events") or {}).values() if e["Type"] == "Api"):
        assert event["Properties"]["RestApiId"] == {"Ref": "GemcastApi"}
    assert template_disagreements(template) == []
    for route in ROUTES:
        logical_id = next(lid for lid, name in FUNCTIONS.items() if name == route.aws_function)
        (event,) = [e for e in template["Resources"][logical_id]["Properties"]["Events"].values()
                    if e["Type"] == "Api" and e["Properties"]["Path"] == route.path]
        # The gateway checks a body's outline where the table gives the route a request schema.
        assert bool(event["Properties"].get("RequestModel", {}).get("ValidateBody")) == bool(route.request)


def test_a_route_missing_from_the_template_is_named(template: dict[str, Any]) -> None:
    events = template["Resources"]["PredictProxyFunction"]["Properties"]["Events"]
    broken = {**template, "Resources": {**template["Resources"], "PredictProxyFunction": {
        **template["Resources"]["PredictProxyFunction"],
        "Properties": {**template["Resources"]["PredictProxyFunction"]["Properties"],
                       "Events": {k: v for k, v in events.items() if v["Properties"].get("Path") != "/v1/models"}}}}}

    (problem,) = template_disagreements(broken)
    assert problem.startswith("GET /v1/models has no Api event")


def test_event_sources(template: dict[str, Any]) -> None:
    res = template["Resources"]

    def events(logical_id: str) -> list[dict[str, Any]]:
        return list(res[logical_id]["Properties"]["Events"].values())

    (raw,) = events("PreprocessFunction")
    assert raw["Type"] == "S3" and raw["Properties"]["Bucket"] == {"Ref": "DataBucket"}
    assert raw["Properties"]["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "raw/"}]
    (champion,) = events("DeployModelFunction")
    assert champion["Properties"]["Filter"]["S3Key"]["Rules"] == [
        {"Name": "prefix", "Value": "models/champion.json"}
    ]
    (daily,) = events("ScheduleTriggerFunction")
    assert daily["Type"] == "ScheduleV2"
    assert daily["Properties"]["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert daily["Properties"]["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["ScheduleDLQ", "Arn"]}
    triggers = {
        "AuthPreSignupFunction": "PreSignUp",
        "AuthPostConfirmationFunction": "PostConfirmation",
        "AuthPreTokenFunction": "PreTokenGeneration",
    }
    for logical_id, trigger in triggers.items():
        (event,) = events(logical_id)
        assert event == {
            "Type": "Cognito",
            "Properties": {"UserPool": {"Ref": "UserPool"}, "Trigger": trigger},
        }


def test_training_job_command(template: dict[str, Any]) -> None:
    container = template["Resources"]["TrainingJobDefinition"]["Properties"]["ContainerProperties"]
    assert container["Command"] == ["train", "--data", "Ref::data", "--registry", "Ref::registry"]


def test_cognito_client_flows(template: dict[str, Any]) -> None:
    client = template["Resources"]["UserPoolClient"]["Properties"]
    assert client["GenerateSecret"] is False
    assert set(client["ExplicitAuthFlows"]) == {
        "ALLOW_USER_PASSWORD_AUTH",
        "ALLOW_REFRESH_TOKEN_AUTH",
        "ALLOW_USER_SRP_AUTH",
    }
    assert template["Resources"]["UserPool"]["Properties"]["UsernameAttributes"] == ["email"]


def test_outputs(template: dict[str, Any]) -> None:
    assert {
        "ApiUrl",
        "UserPoolId",
        "UserPoolClientId",
        "DataBucketName",
        "EndpointName",
        "PredictionLogTableName",
        "InventoryTableName",
        "UsersTableName",
        "IdempotencyTableName",
    } <= set(template["Outputs"])


def test_layer_has_no_heavy_dependencies(template: dict[str, Any]) -> None:
    layer = template["Resources"]["GemcastLayer"]
    assert layer["Metadata"]["BuildMethod"] == "python3.12"
    requirements = (TEMPLATE.parent / layer["Properties"]["ContentUri"] / "requirements.txt").read_text()
    packages = [
        line.split("#")[0].strip() for line in requirements.splitlines()
        if line.split("#")[0].strip() and not line.startswith("-c ")  # the lock constrains, installs nothing
    ]
    assert packages == [], "the gemcast layer ships gemcast's code only"
    # Powertools reaches every function through AWS's own layer, named by one parameter.
    for logical_id, properties in resources_of_type(template, "AWS::Serverless::Function"):
        assert {"Ref": "PowertoolsLayerArn"} in properties["Layers"], logical_id
