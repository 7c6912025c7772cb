"""Every function has its own narrow policies; no wildcard actions, no '*' resources where IAM
offers better, no FullAccess managed policies."""

from __future__ import annotations

from typing import Any

import pytest

from gemcast_local.template import load_template
from tests.infra.iam_rules import NO_POLICY_FUNCTIONS, violations
from tests.infra.tools import TEMPLATE


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def test_template_iam_is_least_privilege(template: dict[str, Any]) -> None:
    problems = violations(template)
    assert not problems, "IAM in template.yaml:\n" + "\n".join(problems)


def test_functions_without_policies_really_declare_none(template: dict[str, Any]) -> None:
    for logical_id in NO_POLICY_FUNCTIONS:
        assert template["Resources"][logical_id]["Properties"]["Policies"] == []


def _function(**props: Any) -> dict[str, Any]:
    return {"Resources": {"BadFunction": {"Type": "AWS::Serverless::Function", "Properties": props}}}


def _statement(**statement: Any) -> dict[str, Any]:
    return _function(Policies=[{"Statement": [{"Effect": "Allow", **statement}]}])


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (_function(), "declares no Policies"),
        (_function(Policies=[]), "not listed in NO_POLICY_FUNCTIONS"),
        (_function(Role="arn:aws:iam::1:role/shared", Policies=[{"Statement": []}]), "shared Role"),
        (_statement(Action="*", Resource="arn:aws:s3:::b/*"), "grants a whole service"),
        (_statement(Action=["s3:*"], Resource="arn:aws:s3:::b/*"), "grants a whole service"),
        (_statement(Action="s3:GetObject", Resource="*"), "s3:GetObject on Resource '*'"),
        (_statement(Action="cloudwatch:PutMetricData", Resource="*"), "cloudwatch:namespace condition"),
        (_statement(NotAction="iam:*", Resource="arn:x"), "NotAction"),
        (_function(Policies=["AmazonS3FullAccess"]), "far broader"),
        (_function(Policies=[{"DynamoDBCrudPolicy": {"TableName": "*"}}]), "'*' instead of a !Ref"),
        (
            {
                "Resources": {
                    "R": {
                        "Type": "AWS::IAM::Role",
                        "Properties": {
                            "ManagedPolicyArns": [
                                {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/AmazonDynamoDBFullAccess"}
                            ],
                        },
                    }
                }
            },
            "far broader",
        ),
    ],
)
def test_the_rules_catch_a_breach(bad: dict[str, Any], expected: str) -> None:
    assert any(expected in problem for problem in violations(bad)), violations(bad)


def test_the_allowed_star_actions_pass_with_their_conditions() -> None:
    ok = _statement(
        Action="cloudwatch:PutMetricData",
        Resource="*",
        Condition={"StringEquals": {"cloudwatch:namespace": "gemcast"}},
    )
    assert violations(ok) == []
