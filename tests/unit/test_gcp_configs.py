"""The GCP deploy configuration: files parse, and gcp/deploy.sh's dry run says what it would do.

No network: the dry run is forced (DRY_RUN=1) or gcloud is a stub that has no credentials.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gemcast import config
from gemcast.config import Settings

REPO = Path(__file__).resolve().parents[2]
GCP = REPO / "gcp"
ENTRY_POINTS = ["ingest_upload", "trigger_training", "api", "before_create", "before_sign_in",
                "check_drift", "retrain_on_drift", "roll_champion"]
STAGES = ["dev", "prod"]
ENV_NAMES = {v for k, v in vars(config).items() if k.isupper() and isinstance(v, str)}

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="gcp/deploy.sh needs bash")


def _config_files(suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        p for p in GCP.rglob("*") if p.suffix in suffixes and "functions" not in p.relative_to(GCP).parts
    )


def _deploy(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO, tmp: Path
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "GCP_BUILD_DIR": str(tmp / "build"), "MODEL_TAG": "t1", **(env or {})}
    return subprocess.run(
        ["bash", str(cwd / "gcp" / "deploy.sh"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _commands(stdout: str) -> list[list[str]]:
    """The printed commands of a dry run, split as the shell would."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def _flag(command: list[str], name: str) -> list[str]:
    return [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}=")]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    if shutil.which("bash") is None:
        pytest.skip("gcp/deploy.sh needs bash")
    return _deploy("dev", env={"DRY_RUN": "1"}, tmp=tmp_path_factory.mktemp("deploy"))


# -- files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", _config_files((".json",)), ids=lambda p: str(p.relative_to(REPO)))
def test_json_files_parse(path: Path) -> None:
    assert isinstance(json.loads(path.read_text()), dict)


@pytest.mark.parametrize("path", _config_files((".yaml", ".yml")), ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_files_parse(path: Path) -> None:
    assert isinstance(yaml.safe_load(path.read_text()), dict)


@pytest.mark.parametrize("stage", STAGES)
def test_env_file_uses_only_config_names_and_valid_values(stage: str) -> None:
    env = yaml.safe_load((GCP / "env" / f"{stage}.yaml").read_text())
    assert set(env) <= ENV_NAMES, f"names not in gemcast/config.py: {sorted(set(env) - ENV_NAMES)}"
    # --env-vars-file rejects non-string values (a bare 5 or true is a YAML number/bool).
    assert all(isinstance(v, str) for v in env.values())
    settings = Settings.from_env(
        env,
        required=("gcp_project", "data_bucket", "registry_uri", "vertex_endpoint_id", "identity_audience"),
    )
    assert settings.stage == stage
    assert settings.registry_uri.startswith(f"gs://{settings.data_bucket}/")
    # A user-chosen Vertex endpoint id that starts with a digit: at most 9 digits, no leading 0.
    assert re.fullmatch(r"[1-9][0-9]{0,8}", settings.vertex_endpoint_id)
    # Unsigned tokens are accepted only where the Auth emulator stands in: never in a deployed stage.
    assert not settings.firebase_auth_emulator_host and not settings.identity_certs_url.startswith("http://")


def test_stages_use_distinct_projects_buckets_and_endpoints() -> None:
    envs = [yaml.safe_load((GCP / "env" / f"{s}.yaml").read_text()) for s in STAGES]
    for key in ("GOOGLE_CLOUD_PROJECT", "DATA_BUCKET", "VERTEX_ENDPOINT_ID"):
        assert len({e[key] for e in envs}) == len(envs), key


def test_index_file_has_the_two_composite_indexes() -> None:
    indexes = json.loads((GCP / "firestore.indexes.json").read_text())["indexes"]
    found = {
        (i["collectionGroup"], tuple((f["fieldPath"], f["order"]) for f in i["fields"])) for i in indexes
    }
    # gemcast.gcp.FirestoreInventory.similar: carat_key >= pivot ascending, < pivot descending.
    assert ("inventory", (("stone_group", "ASCENDING"), ("carat_key", "ASCENDING"))) in found
    assert ("inventory", (("stone_group", "ASCENDING"), ("carat_key", "DESCENDING"))) in found
    assert ("predictions", (("caller", "ASCENDING"), ("created_at", "DESCENDING"))) in found


@pytest.mark.parametrize("path", sorted((GCP / "monitoring").glob("*.json")), ids=lambda p: p.name)
def test_alert_policies_are_cloud_monitoring_alert_policies(path: Path) -> None:
    policy = json.loads(path.read_text())
    assert policy["displayName"].startswith("gemcast")
    for condition in policy["conditions"]:
        threshold = condition["conditionThreshold"]
        assert 'starts_with("gemcast-")' in threshold["filter"]
        assert threshold["comparison"].startswith("COMPARISON_")
    try:
        from google.cloud import monitoring_v3
        from google.protobuf import json_format
    except ImportError:  # the structural checks above still ran
        return
    # The exact message gcloud sends: an unknown or misspelt field raises ParseError.
    json_format.Parse(path.read_text(), monitoring_v3.AlertPolicy.pb(monitoring_v3.AlertPolicy()))


def test_alert_policies_cover_error_rate_and_p99_latency() -> None:
    filters = " ".join(
        c["conditionThreshold"]["filter"] + json.dumps(c["conditionThreshold"].get("aggregations"))
        for p in (GCP / "monitoring").glob("*.json")
        for c in json.loads(p.read_text())["conditions"]
    )
    assert 'metric.labels.response_code_class = "5xx"' in filters
    assert "REDUCE_PERCENTILE_99" in filters


def test_custom_roles_grant_only_what_their_function_calls() -> None:
    predictor = yaml.safe_load((GCP / "iam" / "roles" / "gemcast_predictor.yaml").read_text())
    launcher = yaml.safe_load((GCP / "iam" / "roles" / "gemcast_training_launcher.yaml").read_text())
    assert predictor["includedPermissions"] == ["aiplatform.endpoints.predict"]
    assert all(p.startswith("aiplatform.customJobs.") for p in launcher["includedPermissions"])


# -- the dry run ----------------------------------------------------------------------------------
def test_dry_run_exits_0_and_says_nothing_was_deployed(dry_run: subprocess.CompletedProcess[str]) -> None:
    assert dry_run.returncode == 0, dry_run.stderr
    lines = dry_run.stdout.splitlines()
    assert lines[0].startswith("DRY RUN (DRY_RUN=1)")
    assert lines[-1].startswith("DRY RUN complete") and "nothing was deployed" in lines[-1]


def test_dry_run_deploys_every_entry_point_as_a_gen2_python312_function(
    dry_run: subprocess.CompletedProcess[str],
) -> None:
    deploys = {
        _flag(c, "entry-point")[0]: c
        for c in _commands(dry_run.stdout)
        if c[:3] == ["gcloud", "functions", "deploy"]
    }
    assert sorted(deploys) == sorted(ENTRY_POINTS)
    accounts = set()
    for entry, command in deploys.items():
        assert "--gen2" in command and "--runtime=python312" in command, entry
        assert _flag(command, "env-vars-file") == ["gcp/env/dev.yaml"]
        assert _flag(command, "vpc-connector") and _flag(command, "ingress-settings"), entry
        assert _flag(command, "source")[0].endswith(f"/dev/{entry}")
        accounts.update(_flag(command, "service-account"))
    assert len(accounts) == len(ENTRY_POINTS), "one service account per function"

    ingest = deploys["ingest_upload"]
    assert _flag(ingest, "trigger-event-filters") == [
        "type=google.cloud.storage.object.v1.finalized",
        "bucket=gemcast-dev-data",
    ]
    assert "--no-allow-unauthenticated" in deploys["trigger_training"]
    assert _flag(deploys["trigger_training"], "ingress-settings") == ["internal-only"]


def test_the_api_is_one_public_https_function_serving_the_route_table(
    dry_run: subprocess.CompletedProcess[str],
) -> None:
    """The GCP deploy configuration against gemcast.routes: every route is answered by the one
    ``api`` entry (main.py routes by the table), deployed public over HTTPS, and the web page is
    pointed at it."""
    import ast

    from gemcast.routes import ROUTES

    commands = _commands(dry_run.stdout)
    blocking = {"before_create", "before_sign_in"}
    http = [c for c in commands if c[:3] == ["gcloud", "functions", "deploy"] and "--trigger-http" in c
            and "--allow-unauthenticated" in c and _flag(c, "entry-point")[0] not in blocking]
    assert [_flag(c, "entry-point")[0] for c in http] == ["api"]
    assert _flag(http[0], "ingress-settings") == ["all"]
    main = ast.parse((GCP / "functions" / "main.py").read_text())
    (api,) = [f for f in main.body if isinstance(f, ast.FunctionDef) and f.name == "api"]
    assert "gcp.serve_api" in ast.unparse(api)  # routes by the table, not by a list of its own
    assert ROUTES  # every route of the table, served by that one function
    env = next(c for c in commands if c[:2] == ["make", "webapp-appengine-env"])
    assert "API_URL=https://europe-west1-gemcast-dev.cloudfunctions.net/gemcast-dev-api" in env
    deploy = next(c for c in commands if c[:3] == ["gcloud", "app", "deploy"])
    assert deploy[3] == ".gemcast/webapp-bundle/app.yaml"


def test_dry_run_creates_each_index_of_the_index_file(dry_run: subprocess.CompletedProcess[str]) -> None:
    creates = [
        c
        for c in _commands(dry_run.stdout)
        if c[:5] == ["gcloud", "firestore", "indexes", "composite", "create"]
    ]
    printed = {(_flag(c, "collection-group")[0], tuple(_flag(c, "field-config"))) for c in creates}
    assert printed == {
        ("inventory", ("field-path=stone_group,order=ascending", "field-path=carat_key,order=ascending")),
        ("inventory", ("field-path=stone_group,order=ascending", "field-path=carat_key,order=descending")),
        ("predictions", ("field-path=caller,order=ascending", "field-path=created_at,order=descending")),
    }


def test_dry_run_model_scheduler_and_perimeter(dry_run: subprocess.CompletedProcess[str]) -> None:
    commands = _commands(dry_run.stdout)
    endpoint = next(c for c in commands if c[:4] == ["gcloud", "ai", "endpoints", "create"])
    assert _flag(endpoint, "endpoint-id") == ["410000001"]
    # The model step deploys the champion through the canary's own step (gemcast.vertex_deploy),
    # never a model of its own at 100 % beside it.
    assert not any(c[:3] == ["gcloud", "ai", "models"] or c[:4] == ["gcloud", "ai", "endpoints", "deploy-model"]
                   for c in commands)
    (step,) = [c for c in commands if c[:1] == ["env"] and "gemcast.vertex_deploy" in c]
    assert step[1] == "PYTHONPATH=layers/gemcast" and _flag(step, "endpoint-id") == ["410000001"]
    assert _flag(step, "registry") == ["gs://gemcast-dev-data/models"]
    assert _flag(step, "service-account") == ["gemcast-serving@gemcast-dev.iam.gserviceaccount.com"]

    job = next(c for c in commands if c[:5] == ["gcloud", "scheduler", "jobs", "create", "http"])
    assert _flag(job, "oidc-service-account-email") == [
        "gemcast-scheduler@gemcast-dev.iam.gserviceaccount.com"
    ]
    assert _flag(job, "uri")[0].endswith("/gemcast-dev-trigger-training")

    perimeter = next(
        c for c in commands if c[:4] == ["gcloud", "access-context-manager", "perimeters", "create"]
    )
    spec = yaml.safe_load((GCP / "vpc-sc" / "perimeter.yaml").read_text())
    assert _flag(perimeter, "restricted-services")[0].split(",") == spec["status"]["restrictedServices"]
    assert set(spec["status"]["restrictedServices"]) == {
        "storage.googleapis.com",
        "firestore.googleapis.com",
        "aiplatform.googleapis.com",
    }
    assert any(c[:4] == ["gcloud", "app", "deploy", ".gemcast/webapp-bundle/app.yaml"] for c in commands)


def test_dry_run_grants_no_broad_role(dry_run: subprocess.CompletedProcess[str]) -> None:
    roles = [r for c in _commands(dry_run.stdout) for r in _flag(c, "role")]
    assert roles
    broad = [
        r
        for r in roles
        if r in {"roles/owner", "roles/editor", "roles/aiplatform.user"} or r.endswith(".admin")
    ]
    assert broad == []


@needs_bash
def test_without_credentials_it_prints_instead_of_failing(tmp_path: Path) -> None:
    # A gcloud that has no account, like a fresh install: print-access-token fails.
    stub = tmp_path / "bin" / "gcloud"
    stub.parent.mkdir()
    stub.write_text(
        "#!/bin/sh\necho 'ERROR: You do not currently have an active account selected.' >&2\nexit 1\n"
    )
    stub.chmod(0o755)
    env = {"PATH": f"{stub.parent}{os.pathsep}{os.environ['PATH']}", "DRY_RUN": "0"}
    result = _deploy("prod", "functions", env=env, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("DRY RUN (gcloud has no credentials")
    assert sum(1 for c in _commands(result.stdout) if c[:3] == ["gcloud", "functions", "deploy"]) == 5


@needs_bash
def test_unknown_stage_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    result = _deploy("staging", env={"DRY_RUN": "1"}, tmp=tmp_path)
    assert result.returncode == 2
    assert "gcp/env/staging.yaml" in result.stderr and "dev" in result.stderr and "prod" in result.stderr


@needs_bash
def test_function_source_is_staged_with_the_gemcast_package(tmp_path: Path) -> None:
    # A copy of the parts deploy.sh reads, with a stand-in main.py, so the repo stays untouched.
    root = tmp_path / "repo"
    shutil.copytree(GCP, root / "gcp", ignore=shutil.ignore_patterns("functions", "__pycache__"))
    shutil.copytree(REPO / "layers" / "gemcast" / "gemcast", root / "layers" / "gemcast" / "gemcast")
    (root / "layers" / "gemcast" / "gemcast" / "__pycache__").mkdir(exist_ok=True)
    (root / "gcp" / "functions").mkdir()
    (root / "gcp" / "functions" / "main.py").write_text("def api(request):\n    return 'ok'\n")

    result = _deploy("dev", "functions", env={"DRY_RUN": "1"}, cwd=root, tmp=tmp_path)

    assert result.returncode == 0, result.stderr
    staged = tmp_path / "build" / "dev" / "api"
    assert (staged / "main.py").read_text().startswith("def api")
    assert (staged / "gemcast" / "config.py").is_file()
    assert (staged / "requirements.txt").read_text() == (GCP / "requirements.txt").read_text()
    assert not list(staged.rglob("__pycache__"))
