"""The OpenAPI 3.1 document of the gemcast API: paths from the route table (``gemcast.routes``),
schemas from the constants that validation uses.

Every field of a stone (type, unit, range, grades, description) comes from
``gemcast.schema``'s ``FEATURES``, ``CATEGORIES``, ``RANGES``, ``EXCLUSIVE_LOW``, ``UNITS`` and
``DESCRIPTIONS``, and the batch limit from ``gemcast.predict.MAX_BATCH``: the constants that
``check_stone`` and ``parse_instances`` read. A range changed in the schema therefore changes
the document and validation together. (Validation also checks that a stone's measurements are
physically consistent; a JSON schema cannot say that, so the document says it in words.)

OpenAPI 3.1 uses JSON Schema 2020-12, so the schemas below validate with any JSON Schema
library as they are.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from gemcast import __version__
from gemcast.answer import COVERAGES, DEFAULT_COVERAGE
from gemcast.inventory import DEFAULT_N, MAX_N
from gemcast.predict import MAX_BATCH
from gemcast.schema import (
    CATEGORIES,
    DERIVED_INPUT_NAMES,
    DESCRIPTIONS,
    EXAMPLE_STONE,
    EXCLUSIVE_LOW,
    FEATURES,
    RANGES,
    UNITS,
)

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "CognitoIdToken"

_CONSISTENCY_NOTE = (
    "Besides each field's own range, a stone's measurements must agree: x / y between 0.8 and "
    "1.25 (a round stone), depth within 5 percentage points of 2*z/(x+y), and a carat weight "
    "plausible for the x*y*z volume. A grade is accepted in any letter case."
)


def field_schema(name: str) -> dict[str, Any]:
    """The JSON schema of one stone field, from the validation constants."""
    unit = UNITS.get(name, "")
    description = DESCRIPTIONS[name]
    if name in CATEGORIES:
        grades = CATEGORIES[name]
        return {
            "type": "string",
            "enum": list(grades),
            "description": f"{description}; worst to best: {', '.join(grades)}",
        }
    low, high = RANGES[name]
    schema: dict[str, Any] = {
        "type": "number",
        "maximum": high,
        "description": f"{description} ({unit})" if unit else description,
    }
    if name in EXCLUSIVE_LOW:
        schema["exclusiveMinimum"] = low
    else:
        schema["minimum"] = low
    return schema


def stone_schema() -> dict[str, Any]:
    """One stone: the nine features, every one required (no price)."""
    return {
        "type": "object",
        "description": "A diamond to price. " + _CONSISTENCY_NOTE,
        "required": list(FEATURES),
        "properties": {name: field_schema(name) for name in FEATURES},
        "example": dict(EXAMPLE_STONE),
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def components() -> dict[str, Any]:
    stone_list = {"type": "array", "items": _ref("Stone"), "minItems": 1, "maxItems": MAX_BATCH}
    return {
        "Stone": stone_schema(),
        "StoneList": stone_list,
        "PredictionRequest": {
            "description": f'One stone, a list of up to {MAX_BATCH} stones, or {{"instances": [...]}}.',
            "oneOf": [
                _ref("Stone"),
                _ref("StoneList"),
                {"type": "object", "required": ["instances"],
                 "properties": {"instances": _ref("StoneList"), "parameters": _ref("PredictionParameters")}},
            ],
        },
        "PredictionParameters": {
            "type": "object",
            "description": "Optional, beside instances (or beside a single stone's fields).",
            "properties": {
                "coverage": {"type": "number", "enum": list(COVERAGES), "default": DEFAULT_COVERAGE,
                             "description": "percent of stones whose true price the range holds"},
                "what_if": {"type": "boolean", "default": False,
                            "description": "add the price one grade up and down, and at the next carat milestone"},
                "reasons": {"type": "boolean", "default": True, "description": "add the reasons"},
            },
        },
        "PriceRange": {
            "type": "object",
            "description": "Split conformal range on log price, calibrated on rows the model never trained on.",
            "properties": {
                "low": {"type": "number"}, "high": {"type": "number"},
                "coverage": {"type": "integer", "description": "percent of stones whose true price falls inside"},
            },
        },
        "ReasonGroup": {
            "type": "object",
            "description": "The reasons of one group of inputs: the exact sum of their Shapley values.",
            "properties": {
                "group": {"type": "string", "enum": ["size", "color", "clarity", "cut", "proportions"]},
                "label": {"type": "string"},
                "meaning": {"type": "string", "description": "what the group says of this stone"},
                "effect_pct": {"type": "number"}, "effect_usd": {"type": "number"},
                "inputs": {"type": "array", "items": {"type": "string"}, "description": "the inputs it sums"},
            },
        },
        "WhatIf": {
            "type": "object",
            "description": "The same stone with one grade or the weight changed, priced by the same model.",
            "properties": {
                "change": {"type": "string", "enum": ["color", "clarity", "cut", "carat"]},
                "direction": {"type": "string", "enum": ["up", "down"]},
                "from": {}, "to": {}, "price": {"type": "number"},
                "delta_usd": {"type": "number", "description": "price minus the stone's own price"},
            },
        },
        "Reason": {
            "type": "object",
            "description": "How much one feature moved the price from the base price.",
            "properties": {
                "feature": {"type": "string", "enum": [*FEATURES, *DERIVED_INPUT_NAMES],
                            "description": "a feature, or an input the model derives from them (x/y, carat/xyz)"},
                "label": {"type": "string", "description": "the input's name for people"},
                "description": {"type": "string", "description": "what the input measures"},
                "value": {"description": "the stone's value of the feature"},
                "effect_pct": {"type": "number", "description": "effect on the price, in percent"},
                "effect_usd": {"type": "number", "description": "effect on the price, in US dollars"},
            },
        },
        "PricedStone": {
            "type": "object",
            "required": ["price"],
            "properties": {
                "price": {"type": "number", "description": "predicted price in US dollars"},
                "base_price": {"type": "number", "description": "the price of an average stone"},
                "reasons": {"type": "array", "items": _ref("Reason"), "description": "per model input (details)"},
                "price_range": _ref("PriceRange"),
                "reason_groups": {"type": "array", "items": _ref("ReasonGroup")},
                "what_if": {"type": "array", "items": _ref("WhatIf"), "description": "with parameters.what_if"},
            },
        },
        "ErrorDetail": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "description": "field name -> what is wrong with it",
                    "additionalProperties": {"type": "string"},
                },
            },
        },
        "StoneError": {"type": "object", "required": ["error"], "properties": {"error": _ref("ErrorDetail")}},
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": _ref("ErrorDetail"), "request_id": {"type": "string"}},
        },
        "PredictionResponse": {
            "oneOf": [
                {
                    "description": "a single stone was sent",
                    "allOf": [_ref("PricedStone")],
                    "properties": {"request_id": {"type": "string"}, "model_version": {"type": "string"}},
                },
                {
                    "description": "a list was sent: one entry per stone, in order",
                    "type": "object",
                    "required": ["predictions"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "model_version": {"type": "string"},
                        "predictions": {
                            "type": "array",
                            "items": {"oneOf": [_ref("PricedStone"), _ref("StoneError")]},
                        },
                    },
                },
            ],
        },
        "ModelInfo": {
            "type": "object",
            "required": ["version"],
            "properties": {
                "version": {"type": "string"},
                "promoted_at": {"type": "string"},
                "created": {"type": "string", "description": "when the model was trained"},
                "kind": {"type": "string"},
                "metrics": {"type": "object", "description": "held-out metrics: mae, mape, rmse, r2, n"},
                "trained_on": {"type": "object", "description": "the data snapshot: id, rows, date"},
            },
        },
        "ModelCard": {
            "type": "object",
            "required": ["version", "markdown", "plot_svg"],
            "properties": {
                "version": {"type": "string"},
                "markdown": {"type": "string", "description": "the model card in Markdown"},
                "plot_svg": {"type": "string", "description": "pred_vs_actual.svg, as SVG text"},
            },
        },
        "ModelVersion": {
            "type": "object",
            "required": ["version", "champion"],
            "properties": {
                "version": {"type": "string"},
                "created": {"type": "string", "description": "when the model was trained"},
                "kind": {"type": "string"},
                "metrics": {"type": "object", "description": "held-out metrics: mae, mape, rmse, r2, n"},
                "trained_on": {"type": "object", "description": "the data snapshot: id, date, row counts"},
                "gate": {"type": ["object", "null"],
                         "description": "the gate's decision against the champion of the day: promote, metric, reason"},
                "champion": {"type": "boolean", "description": "true for the model in service"},
                "last_promoted_at": {"type": ["string", "null"]},
            },
        },
        "ModelHistory": {
            "type": "object",
            "required": ["count", "models"],
            "properties": {
                "count": {"type": "integer"},
                "champion": {"type": ["string", "null"], "description": "the version in service"},
                "models": {"type": "array", "items": _ref("ModelVersion"), "description": "newest first"},
            },
        },
        "Health": {"type": "object", "properties": {"status": {"type": "string"}}},
        "LogRecord": {
            "type": "object",
            "properties": {
                "request_id": {"type": "string"},
                "created_at": {"type": "string"},
                "route": {"type": "string"},
                "status": {"type": "integer"},
                "model_version": {"type": "string"},
                "latency_ms": {"type": "number"},
                "request": {},
                "response": {},
            },
        },
        "MyPredictions": {
            "type": "object",
            "properties": {
                "count": {"type": "integer"},
                "predictions": {"type": "array", "items": _ref("LogRecord")},
            },
        },
        "SimilarStone": {
            "type": "object",
            "properties": {
                "stone_id": {"type": "string"},
                **{name: field_schema(name) for name in FEATURES},
                "price": {"type": "number", "description": DESCRIPTIONS["price"]},
            },
        },
        "SimilarResponse": {
            "type": "object",
            "required": ["count", "stones"],
            "properties": {
                "query": {"type": "object"},
                "count": {"type": "integer"},
                "stones": {"type": "array", "items": _ref("SimilarStone")},
                "note": {"type": "string", "description": "present when fewer stones than asked exist"},
            },
        },
    }


def query_parameters() -> dict[str, dict[str, Any]]:
    """The schema of every query parameter a route of the table may name."""
    return {
        "carat": {"name": "carat", "in": "query", "required": True, "schema": field_schema("carat")},
        **{name: {"name": name, "in": "query", "required": True, "schema": field_schema(name)}
           for name in CATEGORIES},
        "n": {"name": "n", "in": "query", "required": False,
              "schema": {"type": "integer", "minimum": 1, "maximum": MAX_N, "default": DEFAULT_N}},
        "limit": {"name": "limit", "in": "query", "required": False,
                  "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
    }


def gateway_responses(route: Any) -> dict[str, Any]:
    """What the gateway answers itself, before any function runs, in the Error shape of
    template.yaml's GatewayResponses (the local gateway renders the same templates)."""
    error = _ref("Error")
    out = {
        "403": _json(error, "no such route or method, or not allowed (MISSING_AUTHENTICATION_TOKEN, ACCESS_DENIED)"),
        "429": _json(error, "over the usage plan's rate or quota (THROTTLED, QUOTA_EXCEEDED)"),
        "5XX": _json(error, "the gateway could not reach the function in time (DEFAULT_5XX)"),
    }
    if route.request:
        out["413"] = _json(error, "the body is over the gateway's limit (REQUEST_TOO_LARGE)")
    return out


def paths() -> dict[str, Any]:
    """The ``paths`` of the document, one operation per route of the table."""
    from gemcast.routes import ROUTES

    secured: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
    parameters = query_parameters()
    out: dict[str, Any] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "security": secured if route.auth else [],
            "responses": {
                **gateway_responses(route),
                **{str(status): _json(_ref(schema), description) if schema else {"description": description}
                   for status, (schema, description) in sorted(route.responses.items())},
            },
        }
        if route.description or route.request:
            operation["description"] = " ".join(filter(None, [route.description, _CONSISTENCY_NOTE
                                                              if route.request else ""]))
        if route.query:
            operation["parameters"] = [parameters[name] for name in route.query]
        if route.request:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": _ref(route.request)}}}
        if route.logged:
            operation["x-gemcast-logged"] = True
        out.setdefault(route.path, {})[route.method.lower()] = operation
    return out


def document() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh copy: callers may change it)."""
    secured: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
    return copy.deepcopy(
        {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "gemcast",
                "version": __version__,
                "description": "Diamond prices with their reasons, and comparable stones from the data.",
            },
            "paths": paths(),
            "components": {
                "schemas": components(),
                "securitySchemes": {
                    SECURITY_SCHEME: {
                        "type": "apiKey",
                        "in": "header",
                        "name": "Authorization",
                        "description": "Bearer and the ID token of the signed-in user: Cognito's IdToken on "
                        "AWS, Identity Platform's idToken on GCP.",
                    }
                },
            },
            "security": secured,
        }
    )


@functools.cache
def _document_once() -> dict[str, Any]:
    return document()


def cached_document() -> dict[str, Any]:
    """The document built once per process (GET /v1/openapi.json serves it on every call)."""
    return _document_once()
