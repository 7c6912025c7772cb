"""No circular dependencies after the SAM transform.

cfn-lint and `sam validate` both pass a template whose S3 event closes a cycle (bucket ->
notification -> function -> role -> bucket); CloudFormation then refuses it at deploy time.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.tools import REPO, SAM, TEMPLATE, ensure_tool, run, tool_env

_SUB_NAME = re.compile(r"\$\{([A-Za-z0-9]+)[.}]")


def references(node: Any, found: set[str]) -> set[str]:
    """Logical IDs that ``node`` refers to with Ref, GetAtt or Sub."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else str(value).split(".")[0])
            elif key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                found.update(_SUB_NAME.findall(text))
                if isinstance(value, list):
                    references(value[1], found)
            else:
                references(value, found)
    elif isinstance(node, list):
        for item in node:
            references(item, found)
    return found


def cycles(resources: dict[str, Any]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for logical_id, resource in resources.items():
        depends = resource.get("DependsOn", [])
        depends = [depends] if isinstance(depends, str) else depends
        edges = references(resource.get("Properties", {}), set()) | set(depends)
        graph[logical_id] = {e for e in edges if e in resources}
    found: list[list[str]] = []
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    python = ensure_tool(SAM).parent / "python"
    result = run(
        [str(python), str(REPO / "tests" / "infra" / "sam_translate.py"), str(TEMPLATE)], env=tool_env()
    )
    assert result.returncode == 0, f"SAM transform failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout)


def test_no_circular_dependencies(transformed: dict[str, Any]) -> None:
    found = cycles(transformed["Resources"])
    assert not found, "circular dependencies:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_cycle_check_can_fail() -> None:
    resources = {
        "Bucket": {"Properties": {"Notify": {"Fn::GetAtt": ["Fn", "Arn"]}}},
        "Fn": {"Properties": {"Role": {"Fn::GetAtt": ["Role", "Arn"]}}},
        "Role": {"Properties": {"Resource": {"Fn::Sub": "${Bucket.Arn}/models/*"}}},
    }
    assert cycles(resources) == [["Bucket", "Fn", "Role", "Bucket"]]
