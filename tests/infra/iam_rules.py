"""Least-privilege rules for the IAM written in template.yaml, as plain functions.

``violations(template)`` lists every breach; the tests assert it is empty for the real template
and non-empty for small bad templates (so the rules can fail).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Actions with no resource-level permissions, so "Resource": "*" is the only form IAM accepts.
# Each is allowed on "*" only under the condition given (None: no condition needed).
STAR_RESOURCE_ALLOWED: dict[str, str | None] = {
    # Registry login token; ECR grants it per account, not per repository.
    "ecr:GetAuthorizationToken": None,
    # Metrics carry no resource; the namespace condition pins what may be written.
    "cloudwatch:PutMetricData": "cloudwatch:namespace",
    # X-Ray trace upload has no resource type (SAM adds these through its managed policy).
    "xray:PutTraceSegments": None,
    "xray:PutTelemetryRecords": None,
}

# Functions that call no AWS API and therefore declare `Policies: []` on purpose.
NO_POLICY_FUNCTIONS: dict[str, str] = {
    "AuthPreSignupFunction": "decides from its event and environment alone",
}

# Resource policies (KMS key policy, bucket policies, log resource policies) are not identity
# policies: "Resource: '*'" in a key policy means "this key", and a Deny-all-insecure
# bucket statement is the point of it. They are reviewed by checkov instead.
FORBIDDEN_MANAGED = ("FullAccess", "AdministratorAccess", "PowerUserAccess")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _is_sam_policy_template(item: Mapping[str, Any]) -> bool:
    return len(item) == 1 and "Statement" not in item and next(iter(item)).endswith("Policy")


def identity_statements(template: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, statement)`` of every identity-policy statement written in the template."""
    for logical_id, resource in template.get("Resources", {}).items():
        rtype = resource.get("Type")
        props = resource.get("Properties") or {}
        if rtype == "AWS::Serverless::Function":
            for i, item in enumerate(_as_list(props.get("Policies") or [])):
                if isinstance(item, dict) and "Statement" in item:
                    for j, statement in enumerate(_as_list(item["Statement"])):
                        yield f"{logical_id}.Policies[{i}].Statement[{j}]", statement
        elif rtype == "AWS::IAM::Role":
            for i, policy in enumerate(props.get("Policies") or []):
                for j, statement in enumerate(_as_list(policy["PolicyDocument"]["Statement"])):
                    yield f"{logical_id}.Policies[{i}].Statement[{j}]", statement
        elif rtype in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for j, statement in enumerate(_as_list(props["PolicyDocument"]["Statement"])):
                yield f"{logical_id}.PolicyDocument.Statement[{j}]", statement


def managed_policy_names(template: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, name or ARN text)`` of every managed policy attached in the template."""
    for logical_id, resource in template.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Serverless::Function":
            for i, item in enumerate(_as_list(props.get("Policies") or [])):
                if isinstance(item, str):
                    yield f"{logical_id}.Policies[{i}]", item
        for i, arn in enumerate(props.get("ManagedPolicyArns") or []):
            text = arn.get("Fn::Sub", arn) if isinstance(arn, dict) else arn
            yield f"{logical_id}.ManagedPolicyArns[{i}]", str(text)


def violations(template: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    resources = template.get("Resources", {})

    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties") or {}
        if "Role" in props:
            problems.append(f"{logical_id}: uses a shared Role; give the function its own Policies")
        policies = props.get("Policies")
        if policies is None:
            problems.append(f"{logical_id}: declares no Policies")
        elif not policies and logical_id not in NO_POLICY_FUNCTIONS:
            problems.append(f"{logical_id}: has empty Policies but is not listed in NO_POLICY_FUNCTIONS")
        for i, item in enumerate(_as_list(policies or [])):
            if isinstance(item, dict) and _is_sam_policy_template(item):
                name, args = next(iter(item.items()))
                for key, value in (args or {}).items():
                    if value == "*" or (isinstance(value, str) and "*" in value):
                        problems.append(f"{logical_id}.Policies[{i}].{name}.{key}: '*' instead of a !Ref")

    for where, statement in identity_statements(template):
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{where}: Allow with NotAction/NotResource grants everything else")
        actions = [str(a) for a in _as_list(statement.get("Action", []))]
        for action in actions:
            if action == "*" or action.endswith(":*"):
                problems.append(f"{where}: action {action!r} grants a whole service")
        resources_ = _as_list(statement.get("Resource", []))
        if "*" in resources_:
            for action in actions:
                if action not in STAR_RESOURCE_ALLOWED:
                    problems.append(
                        f"{where}: {action} on Resource '*' (it supports resource-level permissions)"
                    )
                    continue
                needed = STAR_RESOURCE_ALLOWED[action]
                conditions = statement.get("Condition") or {}
                keys = {key for block in conditions.values() for key in block}
                if needed and needed not in keys:
                    problems.append(f"{where}: {action} on '*' needs a {needed} condition")

    for where, name in managed_policy_names(template):
        if any(word in name for word in FORBIDDEN_MANAGED):
            problems.append(f"{where}: managed policy {name} is far broader than the job")

    return problems
