"""The local stack's template reader: CloudFormation tags, and boto3 arguments that boto3 accepts.

boto3's own parameter validation (through botocore's Stubber, no network) checks that each
returned dict is a valid request of create_table / create_queue / create_user_pool(_client).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from gemcast_local.template import (
    TemplateError,
    cognito_user_pool,
    cognito_user_pool_client,
    dynamodb_tables,
    dynamodb_ttl_attributes,
    load_template,
    sqs_queues,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(REPO / "template.yaml")


def _accepted(service: str, operation: str, kwargs: dict[str, Any], response: dict[str, Any]) -> None:
    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_response(operation, response, kwargs)
        getattr(client, operation)(**kwargs)  # raises ParamValidationError if boto3 rejects it


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return path


def test_short_form_tags_become_long_form(tmp_path: Path) -> None:
    text = """
Resources:
  A:
    Type: X
    Properties:
      R: !Ref Thing
      G: !GetAtt Bucket.Arn
      S: !Sub "arn:${AWS::Partition}:s3:::b"
      SL: !Sub ["${x}", {x: !Ref Y}]
      I: !If [Cond, 1, !Ref AWS::NoValue]
      J: !Join [",", [!Ref A, !Ref B]]
      Z: !Select [0, !GetAZs ""]
"""
    props = load_template(write(tmp_path, text))["Resources"]["A"]["Properties"]
    assert props["R"] == {"Ref": "Thing"}
    assert props["G"] == {"Fn::GetAtt": ["Bucket", "Arn"]}
    assert props["S"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::b"}
    assert props["SL"] == {"Fn::Sub": ["${x}", {"x": {"Ref": "Y"}}]}
    assert props["I"] == {"Fn::If": ["Cond", 1, {"Ref": "AWS::NoValue"}]}
    assert props["J"] == {"Fn::Join": [",", [{"Ref": "A"}, {"Ref": "B"}]]}
    assert props["Z"] == {"Fn::Select": [0, {"Fn::GetAZs": ""}]}


def test_unreadable_templates_say_why(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="cannot read"):
        load_template(tmp_path / "missing.yaml")
    with pytest.raises(TemplateError, match="no Resources"):
        load_template(write(tmp_path, "Parameters: {}\n"))
    with pytest.raises(TemplateError, match="not valid YAML"):
        load_template(write(tmp_path, "Resources: [\n"))


def test_tables_of_the_real_template(template: dict[str, Any]) -> None:
    tables = {t["TableName"]: t for t in dynamodb_tables(template, name=lambda lid: f"local-{lid}")}
    assert set(tables) == {
        "local-PredictionLogTable",
        "local-InventoryTable",
        "local-UsersTable",
        "local-IdempotencyTable",
    }
    log = tables["local-PredictionLogTable"]
    assert log["BillingMode"] == "PAY_PER_REQUEST"
    assert "ProvisionedThroughput" not in log
    assert log["GlobalSecondaryIndexes"][0]["IndexName"] == "by_caller"
    for kwargs in tables.values():
        _accepted("dynamodb", "create_table", kwargs, {})


def test_ttl_attributes(template: dict[str, Any]) -> None:
    assert dynamodb_ttl_attributes(template) == {
        "PredictionLogTable": "expires_at",
        "IdempotencyTable": "expiration",
    }


def test_provisioned_tables_get_throughput_and_intrinsic_keys_are_refused(tmp_path: Path) -> None:
    text = """
Resources:
  T:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: k, AttributeType: S}, {AttributeName: g, AttributeType: S}]
      KeySchema: [{AttributeName: k, KeyType: HASH}]
      GlobalSecondaryIndexes:
        - IndexName: by_g
          KeySchema: [{AttributeName: g, KeyType: HASH}]
          Projection: {ProjectionType: KEYS_ONLY}
  Bad:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: !Ref KeyName, AttributeType: S}]
      KeySchema: [{AttributeName: !Ref KeyName, KeyType: HASH}]
"""
    template = load_template(write(tmp_path, text))
    with pytest.raises(TemplateError, match=r"Bad\.Properties\.KeySchema\[0\]\.AttributeName uses Ref"):
        dynamodb_tables(template, name=str)
    del template["Resources"]["Bad"]
    (table,) = dynamodb_tables(template, name=str)
    assert table["BillingMode"] == "PROVISIONED"
    assert table["ProvisionedThroughput"] == {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
    assert "ProvisionedThroughput" in table["GlobalSecondaryIndexes"][0]
    _accepted("dynamodb", "create_table", table, {})


def test_queues(template: dict[str, Any], tmp_path: Path) -> None:
    queues = {q["QueueName"]: q for q in sqs_queues(template, name=lambda lid: f"local-{lid}")}
    assert set(queues) == {"local-PredictionLogDLQ", "local-ScheduleDLQ", "local-AsyncFailureDLQ"}
    assert queues["local-PredictionLogDLQ"]["Attributes"]["MessageRetentionPeriod"] == "1209600"
    for kwargs in queues.values():
        _accepted("sqs", "create_queue", kwargs, {"QueueUrl": "http://q"})

    fifo = load_template(
        write(
            tmp_path,
            """
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties: {FifoQueue: true, KmsMasterKeyId: !Ref Key, VisibilityTimeout: 30}
""",
        )
    )
    (queue,) = sqs_queues(fifo, name=str)
    assert queue == {"QueueName": "Q.fifo", "Attributes": {"FifoQueue": "true", "VisibilityTimeout": "30"}}


def test_user_pool_and_client(template: dict[str, Any]) -> None:
    pool = cognito_user_pool(template, name=lambda lid: "gemcast-local")
    assert pool["PoolName"] == "gemcast-local"
    assert pool["UsernameAttributes"] == ["email"]
    assert pool["Policies"]["PasswordPolicy"]["MinimumLength"] >= 8
    assert any(a["Name"] == "email" and a["Required"] for a in pool["Schema"])
    assert "DeletionProtection" not in pool  # stage-dependent (!If): not for the local stack
    _accepted("cognito-idp", "create_user_pool", pool, {})

    client = cognito_user_pool_client(template, user_pool_id="us-east-1_abc")
    assert client["UserPoolId"] == "us-east-1_abc"
    assert "ALLOW_USER_PASSWORD_AUTH" in client["ExplicitAuthFlows"]
    assert client["GenerateSecret"] is False
    _accepted("cognito-idp", "create_user_pool_client", client, {})


def test_exactly_one_user_pool_is_expected(tmp_path: Path) -> None:
    template = load_template(write(tmp_path, "Resources: {}\n"))
    with pytest.raises(TemplateError, match="expected one AWS::Cognito::UserPool"):
        cognito_user_pool(template)
