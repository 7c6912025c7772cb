"""What ships holds nothing local, and every build takes the one lock.

The layer, the training/serving image and the GCP functions ship the gemcast package; the local
stack (gemcast_local) is installed with the repository only. A build must not be able to reach it.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "layers" / "gemcast" / "gemcast"
DOCKERFILE = REPO / "training_container" / "Dockerfile"
CONSTRAINTS = REPO / "constraints.txt"

# Imports gemcast_local as a missing module would: what the layer and the image see.
_BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "gemcast_local" or name.startswith("gemcast_local."):
            raise ModuleNotFoundError(f"No module named {name!r} (not shipped)")
        return None
sys.meta_path.insert(0, Block())
sys.path = [p for p in sys.path if not p.rstrip("/").endswith("/local")]
"""


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_gemcast_package_imports_nothing_of_gemcast_local() -> None:
    offenders = {str(p.relative_to(REPO)): sorted(m for m in _imports(p) if m.split(".")[0] == "gemcast_local")
                 for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_shipped_commands_run_without_gemcast_local() -> None:
    script = _BLOCKED + (
        "import gemcast.cli, gemcast.container, gemcast.serving, gemcast.ingest, gemcast.aws\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    parser = subprocess.run([sys.executable, "-c", _BLOCKED + "from gemcast.cli import build_parser\n"
                             "print(sorted(build_parser()._subparsers._group_actions[0].choices))"],
                            capture_output=True, text=True, timeout=60)
    assert "up" not in parser.stdout and "serve" in parser.stdout, parser.stderr


def test_the_image_copies_only_what_it_runs_and_installs_from_the_lock() -> None:
    text = DOCKERFILE.read_text()
    sources = set()
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            sources.update(line.split()[1:-1])
    assert sources == {"pyproject.toml", "constraints.txt", "layers/gemcast/gemcast",
                       "training_container/train", "training_container/serve"}
    assert "-c constraints.txt" in text


def test_the_layer_the_makefile_and_the_dev_venv_take_the_same_lock() -> None:
    assert "-c ../../constraints.txt" in (REPO / "layers" / "gemcast" / "requirements.txt").read_text()
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", CONSTRAINTS.read_text(), re.M))
    # The exporter reads scikit-learn's internals: its test here runs on the image's version.
    for name in ("scikit-learn", "numpy", "onnx", "onnxruntime"):
        assert version(name) == pins[name], f"{name} {version(name)} here, {pins[name]} in constraints.txt"


def test_the_cloud_functions_take_the_firestore_the_tests_run_on() -> None:
    # The inventory load hands BulkWriter prepared Writes through the library's internals
    # (gemcast.gcp.stone_writer_class): the functions deploy the version tested here.
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", CONSTRAINTS.read_text(), re.M))
    deployed = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO / "gcp" / "requirements.txt").read_text(), re.M))
    assert deployed["google-cloud-firestore"] == pins["google-cloud-firestore"] == version("google-cloud-firestore")
