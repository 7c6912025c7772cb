"""``make bench``: every benchmark section; each prints a table and writes bench/results/<name>.json.

    python -m bench.run            # all sections
    python -m bench.run training   # one section
"""

from __future__ import annotations

import importlib
import sys

SECTIONS = ["training", "compare", "packages", "serving", "invocations", "score", "ingest", "load"]


def main(argv: list[str]) -> int:
    chosen = argv or SECTIONS
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    for name in chosen:
        importlib.import_module(f"bench.{name}").run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
