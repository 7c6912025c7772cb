# Infrastructure checks: template.yaml through cfn-lint, sam validate/build and checkov.
# aws-sam-cli and checkov pin conflicting versions of the same libraries, so each lives in
# its own venv inside the repo (git-ignored by `.venv-*/`). The stamp files make a second
# `make infra-tools` a no-op; delete a venv folder to force a reinstall.
SAM_VENV      := .venv-sam
CHECKOV_VENV  := .venv-checkov
SAM_STAMP     := $(SAM_VENV)/.installed-stamp
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp
# Pinned: a new checkov release adds checks, a new SAM CLI changes the translator; bump on
# purpose and rerun tests/infra.
SAM_SPEC      ?= aws-sam-cli==1.170.0
CHECKOV_SPEC  ?= checkov==3.3.30

.PHONY: infra-tools infra-test infra-clean

$(SAM_STAMP): mk/infra.mk
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(SAM_VENV)/bin/python -m pip install -q --disable-pip-version-check '$(SAM_SPEC)'
	touch $@

$(CHECKOV_STAMP): mk/infra.mk
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check '$(CHECKOV_SPEC)'
	touch $@

# Prerequisite of `make test`: the tests in tests/infra/ call these venvs' binaries.
infra-tools: $(SAM_STAMP) $(CHECKOV_STAMP)

# The template checks alone: cfn-lint, sam validate/build, checkov, IAM rules, contracts.
infra-test: $(STAMP) infra-tools
	$(BIN)/python -m pytest tests/infra tests/unit/test_template_reader.py tests/functional/test_auth_hooks.py

infra-clean:
	rm -rf $(SAM_VENV) $(CHECKOV_VENV)
