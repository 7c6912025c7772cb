"""The OpenAPI 3.1 document of the gemcast API, built from the schema that validation uses.

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


def _grade_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": True, "schema": field_schema(name)}


def document() -> dict[str, Any]:
    """The whole OpenAPI document (a fresh copy: callers may change it)."""
    secured: list[dict[str, list[str]]] = [{SECURITY_SCHEME: []}]
    errors = {
        "400": _json(_ref("Error"), "invalid request: error.fields names every bad field"),
        "401": _json(_ref("Error"), "missing, expired or invalid token"),
    }
    paths: dict[str, Any] = {
        "/v1/predictions": {
            "post": {
                "operationId": "createPrediction",
                "summary": "Price one stone or a list of stones",
                "description": "Each stone is validated on its own: in a list, an invalid stone gets an "
                "error entry and the others are priced. " + _CONSISTENCY_NOTE,
                "security": secured,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("PredictionRequest")}},
                },
                "responses": {
                    "200": _json(_ref("PredictionResponse"), "priced"),
                    **errors,
                    "502": _json(_ref("Error"), "the model endpoint answered wrongly"),
                    "503": _json(_ref("Error"), "the model endpoint is unavailable; retry after Retry-After"),
                },
            }
        },
        "/v1/predictions/mine": {
            "get": {
                "operationId": "listMyPredictions",
                "summary": "The caller's own recent requests, newest first",
                "security": secured,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    }
                ],
                "responses": {"200": _json(_ref("MyPredictions"), "the caller's records"), **errors},
            }
        },
        "/v1/models/current": {
            "get": {
                "operationId": "getCurrentModel",
                "summary": "The model in service: version, metrics, the data it was trained on",
                "security": secured,
                "responses": {
                    "200": _json(_ref("ModelInfo"), "the champion"),
                    "401": errors["401"],
                    "404": _json(_ref("Error"), "no model has been promoted yet"),
                },
            }
        },
        "/v1/models/current/card": {
            "get": {
                "operationId": "getCurrentModelCard",
                "summary": "The model card of the model in service (Markdown) and its predicted-vs-actual plot",
                "security": secured,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["version", "markdown", "plot_svg"],
                            "properties": {
                                "version": {"type": "string"},
                                "markdown": {"type": "string", "description": "the model card in Markdown"},
                                "plot_svg": {"type": "string", "description": "pred_vs_actual.svg, as SVG text"},
                            },
                        },
                        "the champion's model card",
                    ),
                    "401": errors["401"],
                    "404": _json(_ref("Error"), "no model has been promoted yet"),
                },
            }
        },
        "/v1/diamonds/similar": {
            "get": {
                "operationId": "listSimilarDiamonds",
                "summary": "The n stones of the data with the same grades and the nearest carat",
                "security": secured,
                "parameters": [
                    {"name": "carat", "in": "query", "required": True, "schema": field_schema("carat")},
                    *(_grade_parameter(name) for name in CATEGORIES),
                    {
                        "name": "n",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_N, "default": DEFAULT_N},
                    },
                ],
                "responses": {"200": _json(_ref("SimilarResponse"), "the nearest stones"), **errors},
            }
        },
        "/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "the OpenAPI document"}},
            }
        },
        "/v1/health": {
            "get": {
                "operationId": "getHealth",
                "summary": "Liveness of the API",
                "security": [],
                "responses": {
                    "200": _json({"type": "object", "properties": {"status": {"type": "string"}}}, "healthy")
                },
            }
        },
    }
    return copy.deepcopy(
        {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "gemcast",
                "version": __version__,
                "description": "Diamond prices with their reasons, and comparable stones from the data.",
            },
            "paths": paths,
            "components": {
                "schemas": components(),
                "securitySchemes": {
                    SECURITY_SCHEME: {
                        "type": "apiKey",
                        "in": "header",
                        "name": "Authorization",
                        "description": "The Cognito ID token of the signed-in user (initiate_auth IdToken).",
                    }
                },
            },
            "security": secured,
        }
    )
