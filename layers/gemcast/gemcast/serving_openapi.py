"""The serving image's own contract as an OpenAPI 3.1 document (served at ``GET /openapi.json``).

What SageMaker and Vertex AI (and gemcast score, and the proxy) may send the model server, and
every answer it gives: the routes, the three content types in and out, the statuses. The stone,
its reasons and the error shapes are those of the API document (gemcast.openapi), read from the
same schema constants, so the two documents cannot drift apart. tests/functional/
test_serving_fuzz.py generates requests from it (schemathesis) and checks every answer against it.
"""

from __future__ import annotations

from typing import Any

from gemcast.openapi import OPENAPI_VERSION, components
from gemcast.schema import EXAMPLE_STONE, FEATURES

CSV_EXAMPLE = ",".join(str(EXAMPLE_STONE[f]) for f in FEATURES) + "\n"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, schema: str = "Error") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def serving_components() -> dict[str, Any]:
    api = components()
    shared = {name: api[name] for name in ("Stone", "Reason", "PricedStone", "ErrorDetail", "StoneError")}
    value_list = {
        "type": "array",
        "description": f"a stone as its {len(FEATURES)} values in the order {', '.join(FEATURES)} (Vertex AI's form)",
        "prefixItems": [api["Stone"]["properties"][f] for f in FEATURES],
        "minItems": len(FEATURES),
        "maxItems": len(FEATURES),
    }
    return {
        **shared,
        "StoneValues": value_list,
        "Instance": {"oneOf": [_ref("Stone"), _ref("StoneValues")]},
        "Parameters": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"reasons": {"type": "boolean", "default": True,
                                       "description": "explain each price (JSON answers only)"}},
        },
        "InvocationRequest": {
            "description": 'One stone, a list of stones, or {"instances": [...], "parameters": {...}}; as many '
                           "stones as fit in 6 MiB.",
            "oneOf": [
                _ref("Stone"),
                {"type": "array", "items": _ref("Instance"), "minItems": 1},
                {"type": "object", "required": ["instances"], "additionalProperties": False,
                 "properties": {"instances": {"type": "array", "items": _ref("Instance"), "minItems": 1},
                                "parameters": _ref("Parameters")}},
            ],
        },
        "InvocationResponse": {
            "type": "object",
            "required": ["predictions", "model_version"],
            "properties": {
                "predictions": {"type": "array", "description": "one entry per stone, in order",
                                "items": {"oneOf": [_ref("PricedStone"), _ref("StoneError")]}},
                "model_version": {"type": "string"},
                "deployedModelId": {"type": "string", "description": "on the Vertex AI path"},
                "modelVersionId": {"type": "string", "description": "on the Vertex AI path"},
            },
        },
        "Error": {"type": "object", "required": ["error"], "properties": {"error": _ref("ErrorDetail")}},
        "RpcStatus": {
            "type": "object",
            "description": "google.rpc.Status, as Vertex AI answers a refused request",
            "required": ["error"],
            "properties": {"error": {"type": "object", "required": ["code", "message", "status"], "properties": {
                "code": {"type": "integer"}, "message": {"type": "string"}, "status": {"type": "string"}}}},
        },
        "Health": {"type": "object", "required": ["status"],
                   "properties": {"status": {"type": "string"}, "model_version": {"type": "string"}}},
        "ExecutionParameters": {
            "type": "object",
            "required": ["MaxConcurrentTransforms", "BatchStrategy", "MaxPayloadInMB"],
            "properties": {"MaxConcurrentTransforms": {"type": "integer", "minimum": 1},
                           "BatchStrategy": {"type": "string", "enum": ["MULTI_RECORD", "SINGLE_RECORD"]},
                           "MaxPayloadInMB": {"type": "integer", "minimum": 1}},
        },
    }


def _predict_operation(summary: str, *, vertex: bool) -> dict[str, Any]:
    refused = "RpcStatus" if vertex else "Error"
    body: dict[str, Any] = {"application/json": {"schema": _ref("InvocationRequest"),
                                                 "example": {"instances": [EXAMPLE_STONE]}}}
    answers: dict[str, Any] = {"application/json": {"schema": _ref("InvocationResponse")}}
    if not vertex:
        body["text/csv"] = {"schema": {"type": "string"}, "example": CSV_EXAMPLE}
        body["application/jsonlines"] = {"schema": {"type": "string"}}
        answers["text/csv"] = {"schema": {"type": "string", "description": "one line a stone: price,error"}}
        answers["application/jsonlines"] = {"schema": {"type": "string", "description": "one JSON object a stone"}}
    return {
        "summary": summary,
        "parameters": [] if vertex else [{
            "name": "reasons", "in": "query", "required": False,
            "schema": {"type": "string", "enum": ["true", "false"]},
            "description": "explain each price; also X-Amzn-SageMaker-Custom-Attributes: reasons=false",
        }],
        "requestBody": {"required": True, "content": body},
        "responses": {
            "200": {"description": "every stone answered in order, with its price or its own error",
                    "content": answers},
            "400": _error("the request as a whole is unusable (not JSON, no stones, a bad parameter)", refused),
            "406": _error("Accept names no type served", refused),
            "413": _error("the body is over 6 MiB", refused),
            "415": _error("Content-Type is none of the types read", refused),
        },
    }


def document() -> dict[str, Any]:
    vertex_path = "/v1/projects/{project}/locations/{location}/endpoints/{endpoint}:predict"
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "gemcast serving image", "version": "1",
                 "description": "The model server's contract for SageMaker (hosting and Batch Transform) "
                                "and Vertex AI (online and batch prediction)."},
        "paths": {
            "/ping": {"get": {"summary": "health: 200 once the model is loaded and checked",
                              "responses": {"200": {"description": "healthy", "content": {
                                  "application/json": {"schema": _ref("Health")}}}}}},
            "/execution-parameters": {"get": {
                "summary": "what Batch Transform should send: strategy, payload size, concurrency",
                "responses": {"200": {"description": "the parameters", "content": {
                    "application/json": {"schema": _ref("ExecutionParameters")}}}}}},
            "/invocations": {"post": _predict_operation("price stones (SageMaker)", vertex=False)},
            vertex_path: {
                "parameters": [{"name": n, "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": "^[a-z0-9-]{1,30}$"}}
                               for n in ("project", "location", "endpoint")],
                "post": _predict_operation("price stones (Vertex AI REST predict)", vertex=True),
            },
        },
        "components": {"schemas": serving_components()},
    }
