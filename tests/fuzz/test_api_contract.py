"""Contract fuzzing of the API: schemathesis generates requests from the API's own OpenAPI
document (``gemcast.openapi.document()``, the one served at /v1/openapi.json) and sends them
through the local gateway with a signed-in user's token.

Seeded and bounded (``MAX_EXAMPLES`` per operation: a few hundred cases a run, more with
``FUZZ_MAX_EXAMPLES``), so a failure reproduces. Each answer is checked for server errors,
status codes and content types the document lists, and a body that matches its schema.

The run prints its tally (cases, answers by status) on the terminal.
"""

from __future__ import annotations

import collections
import json
import os

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gemcast.openapi import document

pytestmark = pytest.mark.e2e

SEED = 13
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "15"))  # per operation; 7 operations
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
TALLY: collections.Counter[str] = collections.Counter()

schema = schemathesis.openapi.from_dict(document())


def test_the_gateway_serves_the_document_the_fuzzing_reads(api_url: str) -> None:
    assert requests.get(f"{api_url}/v1/openapi.json", timeout=10).json() == document()


@schema.parametrize()
@hypothesis.seed(SEED)
@hypothesis.settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck), database=None)
def test_every_generated_request_gets_a_documented_answer(case: schemathesis.Case, api_url: str,
                                                          id_token: str) -> None:
    response = case.call(base_url=api_url, headers={"Authorization": id_token}, timeout=30)
    TALLY["cases"] += 1
    TALLY[f"status {response.status_code}"] += 1
    case.validate_response(response, checks=CHECKS)


def test_the_tally_of_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\napi contract fuzzing (seed {SEED}, {MAX_EXAMPLES} examples an operation): "
              + json.dumps(dict(sorted(TALLY.items()))))
    assert TALLY["cases"] > 0
