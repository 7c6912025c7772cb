"""Lambda packages: the size of each function's code, of the gemcast layer, and cold import time;
and the same cold start for each Cloud Function of gcp/functions/main.py (``run_gcp``).

Each function is zipped as ``sam build`` would ship it (its folder), the gemcast layer as its
package; Powertools comes from AWS's own layer and is measured from the installed package for
comparison. Cold import: a fresh Python 3.12 process (the Lambda runtime's version) in a venv
holding only what Lambda has (boto3, and Powertools with its tracer as AWS's layer brings it),
imports the function's ``app`` module from copies of its folder and of the gemcast layer with no
bytecode, as ``sam build`` ships them (clients created, no call made); median of 5 runs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from bench.common import print_table, write_result
from gemcast_local.provision import local_name, parameter_defaults
from gemcast_local.runtime import ACCOUNT_ID, function_environment
from gemcast_local.template import load_template, resources_of_type

REPO = Path(__file__).resolve().parents[1]
LAMBDA_VENV = REPO / ".venv-lambda"
LAMBDA_PACKAGES = ["boto3", "aws-lambda-powertools[tracer]"]
GCF_VENV = REPO / ".venv-gcf"
GCF_REQUIREMENTS = REPO / "gcp" / "functions" / "requirements.txt"


def python312() -> str:
    """A python3.12 that runs (a pyenv shim may exist and fail)."""
    import glob
    import shutil

    pyenv = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.12*/bin/python3.12")), reverse=True)
    candidates = [shutil.which("python3.12") or "", *pyenv, "/usr/bin/python3.12"]
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0:
            return candidate
    raise RuntimeError("no working python3.12: the cold import is measured on the Lambda runtime's Python")


def lambda_python() -> str:
    """The python of a venv with only what a Lambda function has at run time."""
    python = LAMBDA_VENV / "bin" / "python"
    stamp = LAMBDA_VENV / ".installed-stamp"
    if not stamp.exists():
        subprocess.run([python312(), "-m", "venv", str(LAMBDA_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *LAMBDA_PACKAGES], check=True)
        stamp.touch()
    return str(python)

def gcf_python() -> str:
    """The python of a venv with what a Cloud Function gets from gcp/functions/requirements.txt."""
    python = GCF_VENV / "bin" / "python"
    stamp = GCF_VENV / f".installed-{GCF_REQUIREMENTS.stat().st_mtime_ns}"
    if not stamp.exists():
        subprocess.run([python312(), "-m", "venv", str(GCF_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(GCF_REQUIREMENTS)], check=True)
        stamp.touch()
    return str(python)


IMPORT_SNIPPET = """
import sys, time
sys.path[:0] = [{code!r}, {layer!r}]
t0 = time.perf_counter()
import app
print(time.perf_counter() - t0)
"""


def zipped(paths: list[Path], root: Path) -> tuple[int, int]:
    buffer = io.BytesIO()
    raw = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for base in paths:
            for path in sorted(base.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    zf.write(path, path.relative_to(root))
                    raw += path.stat().st_size
    return len(buffer.getvalue()), raw


def site_package(name: str) -> Path:
    module = __import__(name)
    return Path(module.__file__).parent


def run() -> dict[str, Any]:
    template = load_template(REPO / "template.yaml")
    layer_zip, layer_raw = zipped([REPO / "layers" / "gemcast" / "gemcast"], REPO / "layers" / "gemcast")
    pt = site_package("aws_lambda_powertools")
    pt_zip, pt_raw = zipped([pt], pt.parent)
    # What the Lambda runtime sets (the X-Ray SDK, for one, behaves differently inside Lambda).
    env_base = {"AWS_LAMBDA_FUNCTION_NAME": "bench", "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x",
                "AWS_SECRET_ACCESS_KEY": "x", "POWERTOOLS_TRACE_DISABLED": "true",
                "PATH": os.environ.get("PATH", "")}
    # Names only (nothing is created: this measures imports): every resource by its local name.
    values = {**parameter_defaults(template), "AWS::AccountId": ACCOUNT_ID, "AWS::Region": "us-east-1",
              "AWS::URLSuffix": "amazonaws.com", "AWS::Partition": "aws"}
    for logical_id in template["Resources"]:
        values.update({logical_id: local_name(logical_id), f"{logical_id}.Arn": f"arn:aws:local:::{logical_id}",
                       f"{logical_id}.QueueName": local_name(logical_id)})
    python = lambda_python()
    rows = []
    results: dict[str, Any] = {"gemcast_layer": {"zip_bytes": layer_zip, "unzipped_bytes": layer_raw},
                               "powertools_installed": {"zip_bytes": pt_zip, "unzipped_bytes": pt_raw},
                               "functions": {}}
    for _logical_id, props in resources_of_type(template, "AWS::Serverless::Function"):
        folder = REPO / str(props["CodeUri"]).rstrip("/")
        code_zip, code_raw = zipped([folder], folder)
        env = function_environment(template, folder.name, values)
        env["LOG_DLQ_URL"] = "http://127.0.0.1:9/queue/dlq"
        times = []
        for _ in range(5):
            with tempfile.TemporaryDirectory() as tmp:
                code = Path(tmp) / "code"
                layer = Path(tmp) / "layer"
                shutil.copytree(folder, code, ignore=shutil.ignore_patterns("__pycache__"))
                shutil.copytree(REPO / "layers" / "gemcast" / "gemcast", layer / "gemcast",
                                ignore=shutil.ignore_patterns("__pycache__"))
                out = subprocess.run(
                    [python, "-c", IMPORT_SNIPPET.format(code=str(code), layer=str(layer))],
                    env={**env_base, **env, "PYTHONDONTWRITEBYTECODE": "1", "LAMBDA_TASK_ROOT": str(code)},
                    capture_output=True, text=True,
                    timeout=60, check=False,
                )
            if out.returncode != 0:
                times = []
                error = out.stderr.strip().splitlines()[-1:] or ["?"]
                break
            times.append(float(out.stdout.strip().splitlines()[-1]))
        cold = round(statistics.median(times), 3) if times else None
        results["functions"][folder.name] = {"zip_bytes": code_zip, "unzipped_bytes": code_raw,
                                             "cold_import_s": cold,
                                             **({} if times else {"import_error": error[0]})}
        package = code_zip + layer_zip + pt_zip
        rows.append((folder.name, f"{code_zip / 1024:.1f} KiB + layers {(layer_zip + pt_zip) / 2**20:.2f} MiB "
                     f"= {package / 2**20:.2f} MiB zipped; import {cold if cold is not None else 'failed'} s",
                     "<= 5 MB, <= 0.3 s"))
    write_result("packages", results)
    print_table(
        f"Lambda packages (gemcast layer {layer_zip / 1024:.0f} KiB zipped; Powertools as installed "
        f"{pt_zip / 2**20:.2f} MiB zipped, from AWS's layer in the cloud); cold import on the Lambda "
        f"runtime's Python 3.12, no bytecode for gemcast's code",
        rows,
    )
    print(json.dumps({k: v.get("import_error") for k, v in results["functions"].items() if "import_error" in v})
          if any("import_error" in v for v in results["functions"].values()) else "")
    results["gcp_functions"] = run_gcp()
    return results


# A Cloud Function's cold start: import main.py, then create on first use every client its first
# request needs (what the API's first priced stone creates: the Vertex session, the Firestore
# client of the log, the token verifier; the other entry points' own clients).
# functions-framework (Flask) is the runtime's own server, imported before main.py whatever the
# function: timed apart, like the Lambda runtime's bootstrap, which the Lambda figures leave out.
GCF_SNIPPET = """
import sys, time
sys.path[:0] = [{code!r}]
t0 = time.perf_counter()
import functions_framework
t1 = time.perf_counter()
import main
t2 = time.perf_counter()
{first_call}
print(t1 - t0, t2 - t1, time.perf_counter() - t2)
"""
GCF_FIRST_CALLS = {
    # The first priced stone: the Vertex session, the Firestore log, the token verifier.
    "api": "main.API_DEPS.endpoint; main.API_DEPS.log; main._verifier()",
    # The first model route (GET /v1/models...) adds the registry's Cloud Storage client.
    "api (first model route)": "main.API_DEPS.registry; main._verifier()",
    # For comparison: the client the API created before (google-cloud-aiplatform's, REST transport).
    "api, aiplatform client (before)": (
        "from google.cloud.aiplatform_v1.services.prediction_service import PredictionServiceClient; "
        "from google.api_core.client_options import ClientOptions; "
        "PredictionServiceClient(transport='rest', client_options=ClientOptions("
        "api_endpoint='europe-west1-aiplatform.googleapis.com')); main.API_DEPS.log; main._verifier()"),
    "ingest_upload": "main._gcs(); main._inventory()",
    "trigger_training": "main._gcs(); main._firestore(); main.gcp.job_client('europe-west1-aiplatform.googleapis.com')",
    "before_create": "main._blocking_verifier()",
    "before_sign_in": "main._blocking_verifier()",
}
API_FUNCTIONS = ("api", "api (first model route)", "before_create", "before_sign_in")  # the 0.5 s budget


def bearer_credentials(folder: Path) -> Path:
    """A credentials file of bearer-token credentials (no local signing, as a function's
    metadata-server credentials), so google.auth.default() builds them with no network: a token
    is fetched only at the first request, which no cold start here makes."""
    path = folder / "credentials.json"
    path.write_text(json.dumps({"type": "authorized_user", "client_id": "bench.apps.googleusercontent.com",
                                "client_secret": "bench", "refresh_token": "bench"}))
    return path


def run_gcp() -> dict[str, Any]:
    """Each Cloud Function's cold start, measured as the Lambdas' are: a fresh Python 3.12
    process in a venv of gcp/functions/requirements.txt, main.py and the gemcast package copied
    without bytecode (as deploy.sh stages them), the settings of gcp/env/dev.yaml; import, then
    the first call's client creation; median of 5 runs."""
    import yaml

    env_file = {k: str(v) for k, v in yaml.safe_load((REPO / "gcp" / "env" / "dev.yaml").read_text()).items()}
    python = gcf_python()
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as keys:
        env = {**env_file, "PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1",
               "GOOGLE_APPLICATION_CREDENTIALS": str(bearer_credentials(Path(keys))),
               "NO_GCE_CHECK": "True"}  # no metadata-server probe: the key file is the credentials
        for target, first_call in GCF_FIRST_CALLS.items():
            frameworks, imports, firsts, error = [], [], [], ""
            for _ in range(5):
                with tempfile.TemporaryDirectory() as tmp:
                    code = Path(tmp) / "code"
                    shutil.copytree(REPO / "gcp" / "functions", code, ignore=shutil.ignore_patterns("__pycache__"))
                    shutil.copytree(REPO / "layers" / "gemcast" / "gemcast", code / "gemcast",
                                    ignore=shutil.ignore_patterns("__pycache__"))
                    out = subprocess.run([python, "-c", GCF_SNIPPET.format(code=str(code), first_call=first_call)],
                                         env=env, capture_output=True, text=True, timeout=120, check=False)
                if out.returncode != 0:
                    error = (out.stderr.strip().splitlines() or ["?"])[-1]
                    break
                framework, imported, first = (float(v) for v in out.stdout.split())
                frameworks.append(framework)
                imports.append(imported)
                firsts.append(first)
            if error:
                results[target] = {"error": error}
                rows.append((target, f"failed: {error}", ""))
                continue
            fw, imp, first = (statistics.median(v) for v in (frameworks, imports, firsts))
            results[target] = {"framework_import_s": round(fw, 3), "import_s": round(imp, 3),
                               "first_call_clients_s": round(first, 3), "cold_start_s": round(imp + first, 3)}
            budget = "<= 0.5 s" if target in API_FUNCTIONS else "(background)" if "before" not in target else ""
            rows.append((target, f"main.py {imp:.3f} s + first-call clients {first:.3f} s = {imp + first:.3f} s "
                         f"(functions-framework itself {fw:.3f} s)", budget))
    write_result("gcp_functions", results)
    print_table("Cloud Functions cold start (Python 3.12, gcp/functions/requirements.txt, no bytecode for "
                "main.py and gemcast; import after the runtime's functions-framework, then the clients the "
                "first request creates)", rows)
    return results
