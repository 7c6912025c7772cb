"""THE route table of the gemcast API: the one place a route is written.

For every route: its method and path, whether it needs a signed-in caller, its summary, the
schemas of its request and answers (names of ``gemcast.openapi.components()``), its query
parameters, whether every call goes to the prediction log, the cloud-neutral function of
``gemcast.api`` that answers it, and the Lambda behind API Gateway that serves it on AWS.

Everything else is generated from it or checked against it:
- the OpenAPI document (``gemcast.openapi.document``);
- the AWS powertools resolvers (``gemcast.lambda_api.register_routes`` in each Lambda);
- the GCP doorway, one HTTPS ``api`` Cloud Function routing by path (``gemcast.gcp.serve_api``);
- the local gateway's routes (``gemcast_local.gateway``);
- template.yaml's Api events and the GCP deploy configuration (tests/infra, tests/unit).

Adding a route is one entry here plus its function in ``gemcast.api``; both clouds serve it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gemcast import api


@dataclass(frozen=True)
class Route:
    method: str  # upper case, as HTTP says it
    path: str
    operation_id: str
    summary: str
    auth: bool  # needs a signed-in caller (Cognito / Identity Platform ID token)
    function: Callable[..., api.ApiResponse] = field(repr=False, compare=False)
    aws_function: str  # folder under functions/ whose Lambda serves it behind API Gateway
    responses: Mapping[int, tuple[str | None, str]]  # status -> (schema name, description)
    request: str | None = None  # schema name of the JSON body
    query: tuple[str, ...] = ()  # query parameter names (their schemas live in gemcast.openapi)
    logged: bool = False  # every call, its answer and its status go to the prediction log
    description: str = ""

    @property
    def key(self) -> str:
        """``"POST /v1/predictions"``: the route as logs, metrics and API Gateway name it."""
        return f"{self.method} {self.path}"


Responses = dict[int, tuple[str | None, str]]
_AUTH_ERRORS: Responses = {401: ("Error", "missing, expired or invalid token (the UNAUTHORIZED gateway response)")}
_BAD_REQUEST: Responses = {400: ("Error", "invalid request: error.fields names every bad field")}
_NO_MODEL: Responses = {404: ("Error", "no model has been promoted yet")}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/predictions", "createPrediction", "Price one stone or a list of stones",
          auth=True, function=api.create_prediction, aws_function="predict_proxy",
          request="PredictionRequest", logged=True,
          description="Each stone is validated on its own: in a list, an invalid stone gets an error entry "
                      "and the others are priced.",
          responses={200: ("PredictionResponse", "priced"), **_BAD_REQUEST, **_AUTH_ERRORS,
                     502: ("Error", "the model endpoint answered wrongly"),
                     503: ("Error", "the model endpoint is unavailable; retry after Retry-After")}),
    Route("GET", "/v1/predictions/mine", "listMyPredictions", "The caller's own recent requests, newest first",
          auth=True, function=api.list_my_predictions, aws_function="predict_proxy", query=("limit",),
          responses={200: ("MyPredictions", "the caller's records"), **_BAD_REQUEST, **_AUTH_ERRORS}),
    Route("GET", "/v1/models", "listModels",
          "Every model trained, newest first: metrics, data, gate decision, and the champion",
          auth=True, function=api.list_models, aws_function="predict_proxy",
          responses={200: ("ModelHistory", "the history of every model"), **_AUTH_ERRORS}),
    Route("GET", "/v1/models/current", "getCurrentModel",
          "The model in service: version, metrics, the data it was trained on",
          auth=True, function=api.get_current_model, aws_function="predict_proxy",
          responses={200: ("ModelInfo", "the champion"), **_AUTH_ERRORS, **_NO_MODEL}),
    Route("GET", "/v1/models/current/card", "getCurrentModelCard",
          "The model card of the model in service (Markdown) and its predicted-vs-actual plot",
          auth=True, function=api.get_current_model_card, aws_function="predict_proxy",
          responses={200: ("ModelCard", "the champion's model card"), **_AUTH_ERRORS, **_NO_MODEL}),
    Route("GET", "/v1/diamonds/similar", "listSimilarDiamonds",
          "The n stones of the data with the same grades and the nearest carat",
          auth=True, function=api.list_similar, aws_function="similar", logged=True,
          query=("carat", "cut", "color", "clarity", "n"),
          responses={200: ("SimilarResponse", "the nearest stones"), **_BAD_REQUEST, **_AUTH_ERRORS}),
    Route("GET", "/v1/openapi.json", "getOpenApi", "This document",
          auth=False, function=api.get_openapi, aws_function="predict_proxy",
          responses={200: (None, "the OpenAPI document")}),
    Route("GET", "/v1/health", "getHealth", "Liveness of the API",
          auth=False, function=api.get_health, aws_function="predict_proxy",
          responses={200: ("Health", "healthy")}),
)

_BY_KEY: dict[tuple[str, str], Route] = {(r.method, r.path): r for r in ROUTES}


def find(method: str, path: str) -> tuple[Route | None, bool]:
    """The route of ``method path`` and whether the path exists (under another method, if None)."""
    clean = "/" + path.strip("/") if path.strip("/") else "/"
    route = _BY_KEY.get((method.upper(), clean))
    return route, route is not None or any(r.path == clean for r in ROUTES)


def for_lambda(function: str) -> list[Route]:
    """The routes one Lambda serves behind API Gateway."""
    return [r for r in ROUTES if r.aws_function == function]


def by_operation(operation_id: str) -> Route:
    """A route by its OpenAPI operationId (what clients such as the web page call it)."""
    for route in ROUTES:
        if route.operation_id == operation_id:
            return route
    raise KeyError(f"no route with operationId {operation_id!r}")


def table() -> list[dict[str, Any]]:
    """The table as plain data (docs, tests, the deploy configuration check)."""
    return [{"method": r.method, "path": r.path, "operation_id": r.operation_id, "auth": r.auth,
             "aws_function": r.aws_function, "logged": r.logged, "summary": r.summary} for r in ROUTES]
