"""Every route of the table, signed in and not, valid and invalid, on AWS and on GCP: the same
status, the same JSON, the same contract headers, and the same records in the prediction log.

A route added to ``gemcast.routes.ROUTES`` without cases here fails
``test_every_route_of_the_table_has_parity_cases``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from gemcast.routes import ROUTES
from tests.shared.conftest import Answer, Api, body_of, query_of
from tests.shared.test_api_behaviour import STONES

# What differs by nature between two calls: ids, clocks, and who the caller is on each cloud.
VOLATILE = {"request_id", "created_at", "latency_ms", "expires_at", "caller"}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int
    signed_in: bool = True
    body: str | None = None
    query: dict[str, str] = field(default_factory=dict)
    predict_first: bool = False  # a pricing beforehand, so the caller has a history

    @property
    def route(self) -> str:
        return f"{self.method} {self.path}"


CASES = [
    Case("one stone", "POST", "/v1/predictions", 200, body=body_of("predict_one_stone")),
    Case("list with an invalid stone", "POST", "/v1/predictions", 200, body=body_of("predict_list_with_invalid")),
    Case("bad stone", "POST", "/v1/predictions", 400, body=body_of("predict_bad_stone")),
    Case("bad json", "POST", "/v1/predictions", 400, body=body_of("predict_bad_json")),
    Case("no body", "POST", "/v1/predictions", 400, body=""),
    Case("not signed in", "POST", "/v1/predictions", 401, signed_in=False, body=body_of("predict_one_stone")),
    Case("own history", "GET", "/v1/predictions/mine", 200, query={"limit": "5"}, predict_first=True),
    Case("bad limit", "GET", "/v1/predictions/mine", 400, query={"limit": "0"}),
    Case("not signed in", "GET", "/v1/predictions/mine", 401, signed_in=False),
    Case("history", "GET", "/v1/models", 200),
    Case("not signed in", "GET", "/v1/models", 401, signed_in=False),
    Case("champion", "GET", "/v1/models/current", 200),
    Case("not signed in", "GET", "/v1/models/current", 401, signed_in=False),
    Case("card", "GET", "/v1/models/current/card", 200),
    Case("not signed in", "GET", "/v1/models/current/card", 401, signed_in=False),
    Case("nearest", "GET", "/v1/diamonds/similar", 200, query=query_of("similar_ok")),
    Case("fewer than n", "GET", "/v1/diamonds/similar", 200, query=query_of("similar_fewer_than_n")),
    Case("unknown category", "GET", "/v1/diamonds/similar", 400, query=query_of("similar_unknown_category")),
    Case("missing carat", "GET", "/v1/diamonds/similar", 400, query={"cut": "Ideal", "color": "E", "clarity": "VS1"}),
    Case("not signed in", "GET", "/v1/diamonds/similar", 401, signed_in=False, query=query_of("similar_ok")),
    Case("document", "GET", "/v1/openapi.json", 200, signed_in=False),
    Case("document, signed in", "GET", "/v1/openapi.json", 200),
    Case("health", "GET", "/v1/health", 200, signed_in=False),
]


def normal(value: Any) -> Any:
    """``value`` without what differs by nature (ids, clocks, the caller)."""
    if isinstance(value, dict):
        return {k: normal(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normal(v) for v in value]
    return value


def as_text(value: Any) -> str:
    # Compared as JSON text: 3 and 3.0 would pass a dict comparison but differ for a client.
    return json.dumps(normal(value), sort_keys=True)


def run(api: Api, case: Case) -> tuple[Answer, list[dict[str, Any]]]:
    api.load(STONES)
    if case.predict_first:
        assert api.predict(body_of("predict_one_stone"))[0] == 200
    answer = api.call(case.method, case.path, signed_in=case.signed_in, body=case.body,
                      query=case.query or None)
    return answer, api.records()


def test_every_route_of_the_table_has_parity_cases() -> None:
    covered = {(c.route, c.signed_in) for c in CASES}
    for route in ROUTES:
        assert {(route.key, True), (route.key, False)} & covered, f"{route.key}: no case"
        if route.auth:
            assert (route.key, True) in covered, f"{route.key}: no signed-in case"
            assert (route.key, False) in covered, f"{route.key}: no case without a token"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.route} {c.name}" for c in CASES])
def test_aws_and_gcp_answer_and_log_alike(both: dict[str, Api], case: Case) -> None:
    (aws, aws_log), (gcp, gcp_log) = run(both["aws"], case), run(both["gcp"], case)

    assert aws.status == gcp.status == case.status, (aws.body, gcp.body)
    assert as_text(aws.body) == as_text(gcp.body)
    assert aws.headers == gcp.headers
    assert as_text(aws_log) == as_text(gcp_log)
    route = next(r for r in ROUTES if r.key == case.route)
    # A logged route writes one record per call, under the caller, whatever the status; a call
    # without a token is refused before any function runs and leaves nothing.
    logged = route.logged and (case.signed_in or not route.auth)
    assert len(aws_log) == int(case.predict_first) + int(logged)
    for record in aws_log + gcp_log:
        assert record["caller"] and record["caller"] != "anonymous"
    if logged:
        assert aws_log[-1]["route"] == route.key and aws_log[-1]["status"] == aws.status
