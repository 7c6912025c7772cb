"""Shared helpers of the infrastructure checks: where the tools live and how to run them.

aws-sam-cli and checkov live in their own venvs (.venv-sam, .venv-checkov; `make infra-tools`)
because their dependencies conflict with each other and with the project's venv.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
SAM = REPO / ".venv-sam" / "bin" / "sam"
CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
# Any region will do: nothing here talks to AWS, but the SAM translator insists on one.
REGION = "eu-west-1"


def tool_env(extra_path: str | None = None) -> dict[str, str]:
    """A clean environment for the tools: no real AWS credentials, no telemetry, a region."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAM_"))}
    env.update(
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
        SAM_CLI_TELEMETRY="0",
        # checkov would otherwise try to fetch guidelines from its vendor's API.
        BC_SKIP_MAPPING="TRUE",
    )
    if extra_path:
        env["PATH"] = extra_path + os.pathsep + env.get("PATH", "")
    return env


def ensure_tool(binary: Path) -> Path:
    """The tool's path, installing the tool venvs with `make infra-tools` when it is missing."""
    if not binary.exists():
        result = subprocess.run(
            ["make", "-s", "infra-tools"], cwd=REPO, capture_output=True, text=True, timeout=900
        )
        if result.returncode != 0 or not binary.exists():
            pytest.fail(
                f"{binary.relative_to(REPO)} is missing and `make infra-tools` failed:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
    return binary


def _works(python: str) -> bool:
    try:
        result = subprocess.run([python, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.startswith("Python 3.12")


def python312_dir() -> str:
    """A folder holding a working `python3.12` (sam build needs the Lambda runtime's Python).

    A pyenv shim named python3.12 may exist yet fail when 3.12 is not the selected version, so
    each candidate is run, not just found.
    """
    candidates = []
    found = shutil.which("python3.12")
    if found:
        candidates.append(found)
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3.12"), reverse=True)
    candidates += ["/usr/bin/python3.12", "/usr/local/bin/python3.12"]
    for candidate in candidates:
        if Path(candidate).exists() and _works(candidate):
            return str(Path(candidate).parent)
    pytest.fail("sam build needs python3.12 on PATH (the Lambda runtime); none was found that runs")


def run(cmd: list[str], *, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
