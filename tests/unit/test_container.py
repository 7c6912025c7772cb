"""The image's train and serve entrypoints under AWS Batch, SageMaker and Vertex AI contracts.

GEMCAST_SAGEMAKER_ROOT points the code at a temporary folder in place of /opt/ml.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gemcast.container import SAGEMAKER_ROOT_ENV, main, serve_arguments, train_arguments
from gemcast.errors import ConfigError
from gemcast.registry import Registry

DATA = Path(__file__).resolve().parents[2] / "data" / "diamonds.csv"


@pytest.fixture
def opt_ml(tmp_path: Path) -> Path:
    return tmp_path / "opt_ml"


def sagemaker_training(root: Path, hyper: dict[str, str], channel: str = "training") -> Path:
    """The layout a SageMaker training job gives the container."""
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyper))
    folder = root / "input" / "data" / channel
    folder.mkdir(parents=True)
    (root / "model").mkdir()
    return folder


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# ----------------------------------------------------------------------------- train


def test_batch_passes_its_command_through(opt_ml: Path) -> None:
    env = {SAGEMAKER_ROOT_ENV: str(opt_ml)}
    args = train_arguments(["--data", "s3://b/curated/", "--registry", "s3://b/models"], env)
    assert args == ["train", "--data", "s3://b/curated/", "--registry", "s3://b/models"]


def test_sagemaker_training_reads_its_channel_hyperparameters_and_model_dir(opt_ml: Path) -> None:
    channel = sagemaker_training(opt_ml, {"kind": "linear", "budget": "5", "seed": "3"})

    args = train_arguments([], {SAGEMAKER_ROOT_ENV: str(opt_ml)})

    assert option(args, "--data") == channel.resolve().as_uri() + "/"
    assert option(args, "--registry") == (opt_ml / "model").resolve().as_uri()
    assert (option(args, "--kind"), option(args, "--budget"), option(args, "--seed")) == ("linear", "5", "3")


def test_sagemaker_channel_name_comes_from_the_hyperparameters(opt_ml: Path) -> None:
    channel = sagemaker_training(opt_ml, {"channel": "curated"}, channel="curated")
    args = train_arguments([], {SAGEMAKER_ROOT_ENV: str(opt_ml)})
    assert option(args, "--data") == channel.resolve().as_uri() + "/"


def test_registry_uri_wins_over_the_sagemaker_model_dir(opt_ml: Path) -> None:
    sagemaker_training(opt_ml, {})
    args = train_arguments([], {SAGEMAKER_ROOT_ENV: str(opt_ml), "REGISTRY_URI": "s3://b/models"})
    assert option(args, "--registry") == "s3://b/models"


def test_explicit_arguments_win_over_hyperparameters(opt_ml: Path) -> None:
    sagemaker_training(opt_ml, {"kind": "gbm"})
    args = train_arguments(["--kind", "linear"], {SAGEMAKER_ROOT_ENV: str(opt_ml)})
    assert args.count("--kind") == 1 and option(args, "--kind") == "linear"


def test_vertex_publishes_into_aip_model_dir(opt_ml: Path) -> None:
    env = {SAGEMAKER_ROOT_ENV: str(opt_ml), "AIP_MODEL_DIR": "gs://b/models/"}
    args = train_arguments(["--data", "gs://b/curated/"], env)
    assert option(args, "--registry") == "gs://b/models"  # no trailing slash: a registry root


def test_missing_data_or_registry_is_a_config_error_naming_the_ways_to_give_it(opt_ml: Path) -> None:
    with pytest.raises(ConfigError, match="--data"):
        train_arguments([], {SAGEMAKER_ROOT_ENV: str(opt_ml)})
    with pytest.raises(ConfigError, match="REGISTRY_URI"):
        train_arguments(["--data", "s3://b/curated/"], {SAGEMAKER_ROOT_ENV: str(opt_ml)})


def test_sagemaker_training_end_to_end_publishes_and_promotes_into_opt_ml_model(
    opt_ml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = sagemaker_training(opt_ml, {"kind": "linear", "budget": "1"})
    (channel / "diamonds.csv").write_bytes(b"".join(DATA.read_bytes().splitlines(keepends=True)[:801]))
    monkeypatch.setenv(SAGEMAKER_ROOT_ENV, str(opt_ml))
    monkeypatch.delenv("REGISTRY_URI", raising=False)
    monkeypatch.delenv("AIP_MODEL_DIR", raising=False)

    assert main(["train"]) == 0

    registry = Registry((opt_ml / "model").resolve().as_uri())
    pointer = registry.champion()
    assert pointer is not None and registry.load_champion().version == pointer["version"]


# ----------------------------------------------------------------------------- serve


def test_sagemaker_serves_the_pinned_version_on_8080(opt_ml: Path) -> None:
    env = {SAGEMAKER_ROOT_ENV: str(opt_ml), "REGISTRY_URI": "s3://b/models", "MODEL_VERSION": "v7"}
    args = serve_arguments([], env)
    assert option(args, "--registry") == "s3://b/models" and option(args, "--version") == "v7"
    assert option(args, "--port") == "8080" and option(args, "--host") == "0.0.0.0"


def test_sagemaker_serves_the_package_it_copied_into_opt_ml_model(opt_ml: Path) -> None:
    (opt_ml / "model").mkdir(parents=True)
    (opt_ml / "model" / "manifest.json").write_text("{}")
    args = serve_arguments([], {SAGEMAKER_ROOT_ENV: str(opt_ml), "REGISTRY_URI": "s3://b/models"})
    assert option(args, "--model-dir") == (opt_ml / "model").resolve().as_uri() and "--registry" not in args


def test_serving_with_no_model_anywhere_is_a_config_error(opt_ml: Path) -> None:
    with pytest.raises(ConfigError, match="no model"):
        serve_arguments([], {SAGEMAKER_ROOT_ENV: str(opt_ml)})


def test_vertex_serves_aip_storage_uri_on_aip_http_port(opt_ml: Path) -> None:
    env = {SAGEMAKER_ROOT_ENV: str(opt_ml), "AIP_STORAGE_URI": "gs://b/models/v7/", "AIP_HTTP_PORT": "8081",
           "REGISTRY_URI": "s3://ignored"}
    args = serve_arguments([], env)
    assert option(args, "--model-dir") == "gs://b/models/v7" and option(args, "--port") == "8081"
    assert "--registry" not in args


def test_explicit_serve_arguments_win(opt_ml: Path) -> None:
    args = serve_arguments(["--registry", "file:///m", "--port", "9000", "--host", "127.0.0.1"],
                           {SAGEMAKER_ROOT_ENV: str(opt_ml), "REGISTRY_URI": "s3://b/models"})
    assert args == ["serve", "--registry", "file:///m", "--port", "9000", "--host", "127.0.0.1"]


def test_an_unknown_entrypoint_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit"]) == 2
    assert "usage" in capsys.readouterr().err


def test_a_config_error_exits_2_with_its_message(opt_ml: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(SAGEMAKER_ROOT_ENV, str(opt_ml))
    monkeypatch.delenv("GEMCAST_DATA_URI", raising=False)
    assert main(["train"]) == 2
    assert "no training data" in capsys.readouterr().err


@pytest.mark.parametrize("rooted", ["", "v7", "models/v7"])
def test_the_model_is_found_however_the_archive_was_rooted(opt_ml: Path, rooted: str) -> None:
    package = opt_ml / "model" / rooted
    package.mkdir(parents=True, exist_ok=True)
    (package / "manifest.json").write_text("{}")
    args = serve_arguments([], {SAGEMAKER_ROOT_ENV: str(opt_ml)})
    assert option(args, "--model-dir") == package.resolve().as_uri()


def test_two_packages_in_the_archive_is_a_config_error_naming_them(opt_ml: Path) -> None:
    for version in ("v1", "v2"):
        (opt_ml / "model" / version).mkdir(parents=True)
        (opt_ml / "model" / version / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="v1, v2"):
        serve_arguments([], {SAGEMAKER_ROOT_ENV: str(opt_ml)})


def test_sagemaker_bind_to_port_wins_and_the_safe_range_is_checked(opt_ml: Path) -> None:
    env = {SAGEMAKER_ROOT_ENV: str(opt_ml), "REGISTRY_URI": "s3://b/models", "SAGEMAKER_BIND_TO_PORT": "9123",
           "SAGEMAKER_SAFE_PORT_RANGE": "20000-20999"}
    assert option(serve_arguments([], env), "--port") == "9123"
    with pytest.raises(ConfigError, match="SAGEMAKER_SAFE_PORT_RANGE"):
        serve_arguments([], {**env, "SAGEMAKER_SAFE_PORT_RANGE": "lots"})
    with pytest.raises(ConfigError, match="SAGEMAKER_BIND_TO_PORT"):
        serve_arguments([], {**env, "SAGEMAKER_BIND_TO_PORT": "http"})
