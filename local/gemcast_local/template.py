"""Read template.yaml so the local stack creates its stand-in resources from the real stack.

The local runner asks this module for the boto3 arguments of every DynamoDB table, SQS queue
and the Cognito user pool and client declared in the template, and creates them on moto. A key
schema, index or password policy changed in the template therefore changes the local stack too;
nothing is restated by hand.

    template = load_template(REPO / "template.yaml")
    for kwargs in dynamodb_tables(template, name=lambda logical_id: f"gemcast-local-{logical_id}"):
        dynamodb.create_table(**kwargs)

Names: resources in the template are named by CloudFormation (or by ``!Sub`` expressions that
need a deployed stack), so the caller chooses local names with a ``name(logical_id)`` function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from gemcast.errors import GemcastError

NameFn = Callable[[str], str]

# Short-form CloudFormation tags and the long form each expands to.
_INTRINSICS = {
    "Ref": "Ref",
    "Condition": "Condition",
    "Sub": "Fn::Sub",
    "GetAtt": "Fn::GetAtt",
    "Join": "Fn::Join",
    "Select": "Fn::Select",
    "Split": "Fn::Split",
    "If": "Fn::If",
    "Equals": "Fn::Equals",
    "Not": "Fn::Not",
    "And": "Fn::And",
    "Or": "Fn::Or",
    "FindInMap": "Fn::FindInMap",
    "Base64": "Fn::Base64",
    "Cidr": "Fn::Cidr",
    "GetAZs": "Fn::GetAZs",
    "ImportValue": "Fn::ImportValue",
    "Transform": "Fn::Transform",
    "ToJsonString": "Fn::ToJsonString",
    "Length": "Fn::Length",
}


class TemplateError(GemcastError):
    """The template cannot be read, or a resource lacks what the local stack needs."""


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns ``!Ref X`` into ``{"Ref": "X"}``, ``!Sub s`` into ``{"Fn::Sub": s}``…"""


def _construct(key: str) -> Callable[[yaml.SafeLoader, yaml.Node], dict[str, Any]]:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            # "!GetAtt Resource.Attribute" is the short form of ["Resource", "Attribute"].
            if key == "Fn::GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {key: value}

    return construct


for _tag, _key in _INTRINSICS.items():
    _CfnLoader.add_constructor(f"!{_tag}", _construct(_key))


def load_template(path: str | Path) -> dict[str, Any]:
    """The template as plain data; short-form tags become their long-form dicts."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"cannot read template {path}: {exc}") from exc
    try:
        data = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(f"{path} has no Resources section")
    return data


def resources_of_type(
    template: Mapping[str, Any], resource_type: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(logical_id, properties)`` of every resource of ``resource_type``, in template order."""
    for logical_id, resource in template.get("Resources", {}).items():
        if isinstance(resource, dict) and resource.get("Type") == resource_type:
            yield logical_id, dict(resource.get("Properties") or {})


def is_intrinsic(value: Any) -> bool:
    """True for ``{"Ref": ...}`` / ``{"Fn::...": ...}``: a value only a deployed stack knows."""
    return (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value)) in {"Ref", "Condition", *_INTRINSICS.values()}
    )


def _plain(value: Any, where: str) -> Any:
    """``value`` unchanged when it holds no intrinsic; a TemplateError naming ``where`` otherwise."""
    if is_intrinsic(value):
        raise TemplateError(f"{where} uses {next(iter(value))}; the local stack needs a literal value")
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _logical_id_name(logical_id: str) -> str:
    return logical_id


# --------------------------------------------------------------------------------------- DynamoDB

_INDEX_KEYS = ("IndexName", "KeySchema", "Projection")


def dynamodb_tables(template: Mapping[str, Any], name: NameFn) -> list[dict[str, Any]]:
    """``create_table`` keyword arguments of every AWS::DynamoDB::Table, named by ``name``."""
    tables = []
    for logical_id, props in resources_of_type(template, "AWS::DynamoDB::Table"):
        where = f"{logical_id}.Properties"
        for required in ("KeySchema", "AttributeDefinitions"):
            if required not in props:
                raise TemplateError(f"{logical_id} has no {required}")
        billing = props.get("BillingMode", "PROVISIONED")
        kwargs: dict[str, Any] = {
            "TableName": name(logical_id),
            "KeySchema": _plain(props["KeySchema"], f"{where}.KeySchema"),
            "AttributeDefinitions": _plain(props["AttributeDefinitions"], f"{where}.AttributeDefinitions"),
            "BillingMode": _plain(billing, f"{where}.BillingMode"),
        }
        if billing == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = _plain(
                props.get("ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}),
                f"{where}.ProvisionedThroughput",
            )
        for section in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            indexes = props.get(section)
            if not indexes:
                continue
            converted = []
            for i, index in enumerate(_plain(indexes, f"{where}.{section}")):
                entry = {k: index[k] for k in _INDEX_KEYS if k in index}
                if section == "GlobalSecondaryIndexes" and billing == "PROVISIONED":
                    entry["ProvisionedThroughput"] = index.get(
                        "ProvisionedThroughput", {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
                    )
                if "IndexName" not in entry or "KeySchema" not in entry:
                    raise TemplateError(f"{where}.{section}[{i}] needs IndexName and KeySchema")
                converted.append(entry)
            kwargs[section] = converted
        tables.append(kwargs)
    return tables


def dynamodb_ttl_attributes(template: Mapping[str, Any]) -> dict[str, str]:
    """``{logical_id: ttl attribute}`` of the tables with TTL on (for update_time_to_live)."""
    ttl = {}
    for logical_id, props in resources_of_type(template, "AWS::DynamoDB::Table"):
        spec = props.get("TimeToLiveSpecification") or {}
        if spec.get("Enabled") in (True, "true") and isinstance(spec.get("AttributeName"), str):
            ttl[logical_id] = spec["AttributeName"]
    return ttl


# --------------------------------------------------------------------------------------- SQS

_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "FifoQueue",
    "ContentBasedDeduplication",
    "SqsManagedSseEnabled",
    "KmsMasterKeyId",
)


def _attribute_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sqs_queues(template: Mapping[str, Any], name: NameFn) -> list[dict[str, Any]]:
    """``create_queue`` keyword arguments (QueueName, Attributes) of every AWS::SQS::Queue.

    Attributes whose values are intrinsics (a key ARN from the stack) are left out: they
    describe the deployed queue, not its behaviour.
    """
    queues = []
    for logical_id, props in resources_of_type(template, "AWS::SQS::Queue"):
        attributes = {
            key: _attribute_text(props[key])
            for key in _QUEUE_ATTRIBUTES
            if key in props and not is_intrinsic(props[key])
        }
        queue_name = name(logical_id)
        if attributes.get("FifoQueue") == "true" and not queue_name.endswith(".fifo"):
            queue_name += ".fifo"
        queues.append({"QueueName": queue_name, "Attributes": attributes})
    return queues


# --------------------------------------------------------------------------------------- Cognito

_POOL_KEYS = (
    "Policies",
    "Schema",
    "UsernameAttributes",
    "AliasAttributes",
    "AutoVerifiedAttributes",
    "UsernameConfiguration",
    "AccountRecoverySetting",
    "AdminCreateUserConfig",
    "MfaConfiguration",
)

_CLIENT_KEYS = (
    "GenerateSecret",
    "ExplicitAuthFlows",
    "PreventUserExistenceErrors",
    "EnableTokenRevocation",
    "AccessTokenValidity",
    "IdTokenValidity",
    "RefreshTokenValidity",
    "TokenValidityUnits",
)


def _single(template: Mapping[str, Any], resource_type: str) -> tuple[str, dict[str, Any]]:
    found = list(resources_of_type(template, resource_type))
    if len(found) != 1:
        raise TemplateError(f"expected one {resource_type} in the template, found {len(found)}")
    return found[0]


def _copy_literal(props: Mapping[str, Any], keys: tuple[str, ...], where: str) -> dict[str, Any]:
    """The listed properties that hold literal values; stage-dependent ones (``!If``) are left out."""
    return {
        key: _plain(props[key], f"{where}.{key}")
        for key in keys
        if key in props and not is_intrinsic(props[key])
    }


def cognito_user_pool(template: Mapping[str, Any], name: NameFn = _logical_id_name) -> dict[str, Any]:
    """``create_user_pool`` keyword arguments of the template's one AWS::Cognito::UserPool.

    Carries the password policy, schema, username and verified attributes. The Lambda
    triggers are not included: the local runner calls the auth hooks itself.
    """
    logical_id, props = _single(template, "AWS::Cognito::UserPool")
    kwargs = {"PoolName": name(logical_id)}
    kwargs.update(_copy_literal(props, _POOL_KEYS, f"{logical_id}.Properties"))
    return kwargs


def cognito_user_pool_client(
    template: Mapping[str, Any], user_pool_id: str, name: NameFn = _logical_id_name
) -> dict[str, Any]:
    """``create_user_pool_client`` keyword arguments of the one AWS::Cognito::UserPoolClient."""
    logical_id, props = _single(template, "AWS::Cognito::UserPoolClient")
    kwargs = {"UserPoolId": user_pool_id, "ClientName": name(logical_id)}
    kwargs.update(_copy_literal(props, _CLIENT_KEYS, f"{logical_id}.Properties"))
    return kwargs
