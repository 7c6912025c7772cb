"""cfn-lint: the template is valid CloudFormation (after the SAM transform) with 0 errors."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.infra.tools import TEMPLATE, run, tool_env


def test_cfn_lint_reports_no_errors() -> None:
    # Warnings (W*) are reported too; cfn-lint exits 2 for errors, 4 for warnings, 6 for both.
    # cfn-lint is a dev dependency of the project venv: its script sits beside this Python.
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = run([str(cfn_lint), "--format", "parseable", str(TEMPLATE)], env=tool_env())
    findings = result.stdout.strip()
    assert result.returncode == 0, (
        f"cfn-lint (exit {result.returncode}):\n{findings}\n{result.stderr[-2000:]}"
    )
