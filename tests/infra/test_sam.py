"""`sam validate --lint` and `sam build` of every function and the layer, without Docker or AWS."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from gemcast_local.template import load_template, resources_of_type
from tests.infra.tools import REPO, SAM, TEMPLATE, ensure_tool, python312_dir, run, tool_env


def test_sam_validate_lint() -> None:
    sam = ensure_tool(SAM)
    result = run([str(sam), "validate", "--lint", "--template-file", str(TEMPLATE)], env=tool_env())
    assert result.returncode == 0, f"sam validate --lint:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"


def missing_code() -> list[str]:
    """Functions whose CodeUri holds no app.py, and layers without requirements.txt."""
    template = load_template(TEMPLATE)
    missing = []
    for logical_id, props in resources_of_type(template, "AWS::Serverless::Function"):
        folder = REPO / props["CodeUri"]
        if not (folder / "app.py").is_file():
            missing.append(f"{logical_id}: {props['CodeUri']}app.py")
    for logical_id, props in resources_of_type(template, "AWS::Serverless::LayerVersion"):
        if not (REPO / props["ContentUri"] / "requirements.txt").is_file():
            missing.append(f"{logical_id}: {props['ContentUri']}requirements.txt")
    return missing


def test_every_code_folder_exists() -> None:
    """Each function's CodeUri holds an app.py; named here, before a long build says less."""
    missing = missing_code()
    assert not missing, "missing handler code (folder not written yet?):\n" + "\n".join(missing)


@pytest.mark.slow
def test_sam_build_builds_every_function_and_the_layer() -> None:
    missing = missing_code()
    assert not missing, "cannot build, missing handler code:\n" + "\n".join(missing)
    sam = ensure_tool(SAM)
    with tempfile.TemporaryDirectory(prefix="gemcast-sam-build-") as tmp:
        build_dir = Path(tmp) / "build"
        # --no-cached: samconfig.toml's `cached = true` would write .aws-sam/deps into the repo.
        result = run(
            [
                str(sam),
                "build",
                "--template-file",
                str(TEMPLATE),
                "--build-dir",
                str(build_dir),
                "--cache-dir",
                str(Path(tmp) / "cache"),
                "--parallel",
                "--no-cached",
            ],
            env=tool_env(extra_path=python312_dir()),
            timeout=900,
        )
        assert result.returncode == 0, f"sam build:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

        template = load_template(TEMPLATE)
        for logical_id, _ in resources_of_type(template, "AWS::Serverless::Function"):
            assert (build_dir / logical_id / "app.py").is_file(), f"{logical_id} was not built"
        layer = build_dir / "GemcastLayer" / "python"
        assert (layer / "gemcast" / "config.py").is_file(), "the layer lacks the gemcast package"
        # The layer holds gemcast alone: Powertools comes from AWS's layer (PowertoolsLayerArn),
        # boto3 from the runtime, and the heavy libraries belong to the training/serving image.
        for other in ("aws_lambda_powertools", "botocore", "numpy", "sklearn", "pandas", "scipy"):
            assert not (layer / other).exists(), f"{other} ended up in the gemcast layer"
        size = sum(p.stat().st_size for p in layer.rglob("*") if p.is_file())
        assert size < 2 * 2**20, f"layer is {size / 2**20:.1f} MiB unzipped"
