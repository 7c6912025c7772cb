"""The house map: every folder says what it holds, and no document points at a file that is gone."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Names of objects the system writes at run time (bucket and registry layout), not repository files.
RUNTIME = ("raw/", "curated/", "rejected/", "models/", "monitoring/", "build/", ".gemcast/", ".tools/")
LINK = re.compile(r"\]\(([^)#\s]+)\)")
CODE_PATH = re.compile(r"`([\w.-]+(?:/[\w.-]+)+\.(?:py|md|yaml|yml|json|toml|txt|sh|csv|mk|js|html|css))`")


def tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [p for p in out.splitlines() if (REPO / p).exists()]


def folders(files: list[str]) -> set[str]:
    return {str(parent) for f in files for parent in Path(f).parents if str(parent) != "."}


def test_every_folder_says_what_it_holds_in_its_first_line() -> None:
    files = tracked()
    silent = []
    for folder in sorted(folders(files)):
        readme, init = REPO / folder / "README.md", REPO / folder / "__init__.py"
        if readme.is_file() and readme.read_text().strip():
            continue
        if init.is_file() and init.read_text().lstrip().startswith('"""'):
            continue
        # A folder of one doorway (functions/<name>/app.py) says it in that module's docstring.
        code = [f for f in files if str(Path(f).parent) == folder and f.endswith(".py")]
        if code and all((REPO / f).read_text().lstrip().startswith('"""') for f in code):
            continue
        # Otherwise the nearest README above names it, as "<name>/".
        above = next((REPO / p / "README.md" for p in Path(folder).parents if (REPO / p / "README.md").is_file()), None)
        if above is not None and f"{Path(folder).name}/" in above.read_text():
            continue
        silent.append(folder)
    assert silent == [], f"folders that say nowhere what they hold: {silent}"


def test_documents_point_only_at_files_that_exist() -> None:
    files = tracked()
    known = set(files) | folders(files)
    stale = []
    for doc in (f for f in files if f.endswith(".md")):
        text = (REPO / doc).read_text()
        for target in LINK.findall(text):
            if "://" in target or target.startswith("mailto:"):
                continue
            path = (Path(doc).parent / target).resolve()
            if not path.exists():
                stale.append(f"{doc}: link {target}")
        for match in CODE_PATH.finditer(text):
            name = match.group(1)
            if text[:match.start()].endswith("file "):
                continue  # a file of another repository or package, named as the source of data
            if name.startswith(RUNTIME) or any(f == name or f.endswith("/" + name) for f in known):
                continue
            stale.append(f"{doc}: {name}")
    assert stale == [], "documents name files that do not exist:\n" + "\n".join(stale)
