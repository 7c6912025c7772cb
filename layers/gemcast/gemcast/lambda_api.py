"""The AWS doorway of the route table: each API Lambda's powertools resolver gets its routes
from ``gemcast.routes`` (the ones whose ``aws_function`` it is), and every route runs through
``gemcast.api.respond``. The caller is the ``sub`` claim the Cognito authorizer put in the event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from gemcast.api import ApiDeps, ApiRequest, ApiResponse, respond
from gemcast.metrics import record_request
from gemcast.routes import Route, for_lambda


def request_of(event: Any) -> ApiRequest:
    """An ApiRequest from powertools' current APIGatewayProxyEvent."""
    claims = event.request_context.authorizer.claims or {}
    return ApiRequest(
        method=str(event.http_method).upper(),
        path=str(event.resource or event.path),
        query=dict(event.query_string_parameters or {}),
        body=event.decoded_body,
        caller=str(claims.get("sub") or ""),
        request_id=str(event.request_context.request_id or ""),
    )


def to_response(answer: ApiResponse) -> Any:
    from aws_lambda_powertools.event_handler import Response, content_types

    headers = answer.all_headers()
    headers.pop("Content-Type", None)
    return Response(answer.status, content_types.APPLICATION_JSON, json.dumps(answer.body, default=str), headers)


def register_routes(app: Any, function: str, deps: ApiDeps, *,
                    wrap: Callable[[Callable[[], Any]], Callable[[], Any]] = lambda view: view) -> list[Route]:
    """Add to ``app`` (an APIGatewayRestResolver) every route the table gives Lambda ``function``;
    ``wrap`` decorates each view (the Tracer's ``capture_method``)."""
    routes = for_lambda(function)
    if not routes:
        raise KeyError(f"the route table gives no route to the Lambda {function!r}")
    for route in routes:
        def view(route: Route = route) -> Any:
            return to_response(respond(route, request_of(app.current_event), deps))

        view.__name__ = route.operation_id
        app.route(route.path, method=route.method)(wrap(view))
    return routes


def serve(app: Any, metrics: Any, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """One invocation: resolve the route, count the request in ``metrics``."""
    started = time.perf_counter()
    response: dict[str, Any] = app.resolve(event, context)
    record_request(metrics, event, response, started)
    return response
