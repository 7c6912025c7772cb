"""Entrypoints of the training and serving image: the same code under three contracts.

``train``:
- AWS Batch: ``train --data s3://... --registry s3://...`` (the job definition's command).
- SageMaker training job: no arguments; data in ``/opt/ml/input/data/<channel>/``,
  hyperparameters in ``/opt/ml/input/config/hyperparameters.json``, output in ``/opt/ml/model``.
- Vertex AI CustomJob: ``--data gs://...``; the registry defaults to ``AIP_MODEL_DIR``.

``serve``:
- SageMaker: port 8080, or ``SAGEMAKER_BIND_TO_PORT`` when the platform sets it (inference
  pipelines, multi-container endpoints); the server opens no other port, so
  ``SAGEMAKER_SAFE_PORT_RANGE`` is only checked for its form. ``/ping``, ``/invocations`` and
  ``/execution-parameters``. The model is the package SageMaker copied into ``/opt/ml/model``
  however the archive was rooted (``manifest.json`` at the top, in ``<version>/`` or in
  ``models/<version>/``: the one manifest inside is enough), or else ``REGISTRY_URI`` at
  ``MODEL_VERSION`` (pinned by the deployment, so blue/green swaps a known version).
- Vertex AI: ``AIP_HTTP_PORT``, ``AIP_HEALTH_ROUTE``, ``AIP_PREDICT_ROUTE``; the model is the
  package at ``AIP_STORAGE_URI``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gemcast.errors import ConfigError

SAGEMAKER_ROOT_ENV = "GEMCAST_SAGEMAKER_ROOT"  # lets tests use a folder in place of /opt/ml
MANIFEST_DEPTH = 3  # /opt/ml/model[/models][/<version>]/manifest.json


def _sm_root(environ: Mapping[str, str]) -> Path:
    return Path(environ.get(SAGEMAKER_ROOT_ENV, "/opt/ml"))


def train_arguments(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The ``gemcast train`` arguments for whichever platform runs the image."""
    args = list(argv)
    has = {a.split("=")[0] for a in args if a.startswith("--")}
    root = _sm_root(environ)
    hyper_file = root / "input" / "config" / "hyperparameters.json"
    hyper: dict[str, Any] = json.loads(hyper_file.read_text()) if hyper_file.is_file() else {}
    if "--data" not in has:
        data = environ.get("GEMCAST_DATA_URI") or hyper.get("data")
        channels = root / "input" / "data"
        if not data and channels.is_dir():
            channel = channels / str(hyper.get("channel", "training"))
            if channel.is_dir():
                data = channel.resolve().as_uri() + "/"
        if not data:
            raise ConfigError("no training data: pass --data, set GEMCAST_DATA_URI, or give a SageMaker channel")
        args += ["--data", str(data)]
    if "--registry" not in has:
        registry = (
            environ.get("REGISTRY_URI")
            or hyper.get("registry")
            or environ.get("AIP_MODEL_DIR")
            or (str((root / "model").resolve().as_uri()) if (root / "input").is_dir() else None)
        )
        if not registry:
            raise ConfigError("no registry: pass --registry, set REGISTRY_URI or AIP_MODEL_DIR")
        args += ["--registry", str(registry).rstrip("/")]
    for key in ("kind", "seed", "budget", "trials", "margin"):
        if key in hyper and f"--{key}" not in has:
            args += [f"--{key}", str(hyper[key])]
    return ["train", *args]


def model_package(model_dir: Path) -> Path | None:
    """The one folder under ``model_dir`` (itself included) that holds a model manifest.

    SageMaker unpacks model.tar.gz into /opt/ml/model as it was made: with the manifest at the
    top, inside the version folder, or inside models/<version>/. Several manifests are a
    ConfigError naming them (which one to serve is then the deployment's choice to pin).
    """
    if not model_dir.is_dir():
        return None
    found = [model_dir] if (model_dir / "manifest.json").is_file() else []
    level = [model_dir]
    for _ in range(MANIFEST_DEPTH - 1):
        if found:
            break
        level = sorted(d for parent in level for d in parent.iterdir() if d.is_dir() and not d.name.startswith("."))
        found = [d for d in level if (d / "manifest.json").is_file()]
    if len(found) > 1:
        names = ", ".join(str(f.relative_to(model_dir)) for f in found)
        raise ConfigError(
            f"{model_dir} holds {len(found)} model packages ({names}): put one in the archive, or set REGISTRY_URI"
            " and MODEL_VERSION"
        )
    return found[0] if found else None


def serve_port(environ: Mapping[str, str]) -> str:
    """The port to listen on: SAGEMAKER_BIND_TO_PORT, then AIP_HTTP_PORT, then 8080."""
    safe = environ.get("SAGEMAKER_SAFE_PORT_RANGE")
    if safe is not None:
        low, sep, high = safe.partition("-")
        if not (sep and low.strip().isdigit() and high.strip().isdigit() and int(low) <= int(high)):
            raise ConfigError(f"SAGEMAKER_SAFE_PORT_RANGE must be LOW-HIGH, got {safe!r}")
    for var in ("SAGEMAKER_BIND_TO_PORT", "AIP_HTTP_PORT"):
        value = environ.get(var)
        if value:
            if not value.strip().isdigit() or not 0 < int(value) < 65536:
                raise ConfigError(f"{var} must be a port number, got {value!r}")
            return value.strip()
    return "8080"


def serve_arguments(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The ``gemcast serve`` arguments for SageMaker or Vertex AI."""
    args = list(argv)
    has = {a.split("=")[0] for a in args if a.startswith("--")}
    if "--registry" not in has and "--model-dir" not in has:
        local = _sm_root(environ) / "model"
        whole_registry = (local / "champion.json").is_file()
        package = None if environ.get("AIP_STORAGE_URI") or whole_registry else model_package(local)
        if environ.get("AIP_STORAGE_URI"):
            args += ["--model-dir", environ["AIP_STORAGE_URI"].rstrip("/")]
        elif whole_registry:  # a registry trained into /opt/ml/model by a SageMaker training job
            args += ["--registry", local.resolve().as_uri()]
        elif package is not None:
            # SageMaker copied the model package here (and may isolate the container from S3).
            args += ["--model-dir", package.resolve().as_uri()]
        elif environ.get("REGISTRY_URI"):
            args += ["--registry", environ["REGISTRY_URI"]]
            if environ.get("MODEL_VERSION") and "--version" not in has:
                args += ["--version", environ["MODEL_VERSION"]]
        else:
            raise ConfigError(
                f"no model: set AIP_STORAGE_URI or REGISTRY_URI, or put a model package in {local}"
            )
    if "--port" not in has:
        args += ["--port", serve_port(environ)]
    if "--host" not in has:
        args += ["--host", "0.0.0.0"]  # noqa: S104 - inside the container, the platform routes to it
    return ["serve", *args]


def main(argv: Sequence[str] | None = None) -> int:
    from gemcast.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in {"train", "serve"}:
        print("usage: (train | serve) [gemcast options]", file=sys.stderr)
        return 2
    build = train_arguments if argv[0] == "train" else serve_arguments
    try:
        return cli_main(build(argv[1:], os.environ))
    except ConfigError as exc:
        print(f"{argv[0]}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
