# gemcast: one Makefile for set-up, tests, the local stack and benchmarks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv test test-fast demo demo-gcp bench lint clean browser

# constraints.txt pins what the image and the layer install; the dev venv takes the same
# versions, so the exporter's test (tests/unit/test_export.py) runs on the image's scikit-learn.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian's Chromium for the browser tests (apt, with sudo when not root); a no-op when present.
browser:
	bash .ci/install-browser.sh

test: $(STAMP) infra-tools browser lint
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not e2e"

# DEMO_ARGS passes options, e.g. `make demo DEMO_ARGS="--api-port 3100 --web-port 8150"`.
DEMO_ARGS ?=

demo: $(STAMP)
	$(BIN)/gemcast-local up $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -c "import xgboost" 2>/dev/null || $(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run

lint: $(STAMP)
	$(BIN)/ruff check layers functions gcp local tests webapp bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .venv-sam .venv-checkov .venv-lambda .gemcast .aws-sam bench/results

# Targets of each part of the system live beside it in mk/.
-include mk/*.mk
