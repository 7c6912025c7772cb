"""Contract fuzzing of the serving image: requests generated from its own OpenAPI document.

schemathesis (seeded, bounded) sends generated and mutated requests to a real ``gemcast serve``
and checks each answer: never a server error, a documented status, a documented content type,
a body that matches its schema. Part of issue 13's fuzzing; the API's document is fuzzed beside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gemcast.pipeline import run_training
from gemcast.serving_openapi import document
from gemcast_local.stack import ModelServer

REPO = Path(__file__).resolve().parents[2]


@schemathesis.serializer("application/jsonlines", "text/csv")
def _text_body(_ctx: Any, value: Any) -> bytes:
    """The text bodies as generated (any string): the server must answer each, line by line."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


schema = schemathesis.openapi.from_dict(document())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    root = tmp_path_factory.mktemp("registry") / "models"
    run_training(str(REPO / "data" / "diamonds.csv"), root.as_uri(), kind="gbm", budget_s=1, max_trials=1,
                 max_iter=20, progress=None)
    with ModelServer(root.as_uri(), workers=1) as running:
        yield running


def test_the_served_document_is_this_document(server: ModelServer) -> None:
    assert requests.get(f"{server.url}/openapi.json", timeout=5).json() == document()


@schema.parametrize()
@settings(max_examples=int(os.environ.get("FUZZ_MAX_EXAMPLES", "50")), derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_generated_request_gets_a_documented_answer(case: schemathesis.Case, server: ModelServer) -> None:
    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=30)
