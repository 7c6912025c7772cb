"""checkov on template.yaml: no failed check; every skipped check says why, in the template."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.tools import CHECKOV, TEMPLATE, ensure_tool, run, tool_env


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    checkov = ensure_tool(CHECKOV)
    result = run(
        [
            str(checkov),
            "--file",
            str(TEMPLATE),
            "--framework",
            "cloudformation",
            "--skip-download",
            "--output",
            "json",
            "--compact",
        ],
        env=tool_env(),
    )
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError:
        output = f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        pytest.fail(f"checkov printed no JSON (exit {result.returncode}):\n{output}")
    assert isinstance(data, dict), f"checkov found nothing to scan: {data!r}"
    return data


def test_checkov_scanned_the_template(report: dict[str, Any]) -> None:
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] > 50


def test_checkov_has_no_failed_checks(report: dict[str, Any]) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} (line {c['file_line_range'][0]}): {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "checkov failed checks:\n" + "\n".join(failed)


def test_every_skip_gives_its_reason(report: dict[str, Any]) -> None:
    unexplained = [
        f"{c['check_id']} {c['resource']}"
        for c in report["results"]["skipped_checks"]
        if len(str(c["check_result"].get("suppress_comment", "")).strip(" :")) < 15
        or "No comment provided" in str(c["check_result"].get("suppress_comment"))
    ]
    assert not unexplained, "skips without a reason (write `# checkov:skip=ID: why`):\n" + "\n".join(
        unexplained
    )
