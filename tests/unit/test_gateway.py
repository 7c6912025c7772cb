"""The local gateway without a network: routes read from template.yaml, the Cognito authorizer's
checks (against a JWKS file), and the proxy events it builds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gemcast_local.gateway import AuthError, CognitoAuthorizer, proxy_event, routes_from_template
from gemcast_local.runtime import function_environment
from gemcast_local.template import TemplateError, load_template

REPO = Path(__file__).resolve().parents[2]
ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_local"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(REPO / "template.yaml")


def test_routes_come_from_the_functions_api_events(template: dict[str, Any]) -> None:
    routes = {(r.method, r.path): r for r in routes_from_template(template)}
    assert routes[("POST", "/v1/predictions")].function == "predict_proxy"
    assert routes[("GET", "/v1/diamonds/similar")].function == "similar"
    assert routes[("POST", "/v1/predictions")].auth and routes[("GET", "/v1/predictions/mine")].auth
    assert not routes[("GET", "/v1/health")].auth and not routes[("GET", "/v1/openapi.json")].auth
    # The gateway's body check is the template's request model.
    assert routes[("POST", "/v1/predictions")].validate_body_model is not None


def test_function_environment_resolves_the_templates_references(template: dict[str, Any]) -> None:
    values = {
        "Stage": "dev",
        "PredictionLogTable": "log-table",
        "PredictionLogDLQ": "http://q",
        "DataBucket": "bucket",
        "InventoryTable": "inv",
    }
    env = function_environment(template, "PredictProxyFunction", values)
    assert env["PREDICTION_LOG_TABLE"] == "log-table" and env["REGISTRY_URI"] == "s3://bucket/models"
    assert env["ENDPOINT_NAME"] == "gemcast-dev" and env["POWERTOOLS_SERVICE_NAME"] == "predict_proxy"
    with pytest.raises(
        TemplateError, match=r"PredictProxyFunction\.Environment\.\w+: the local stack has no value"
    ):
        function_environment(template, "PredictProxyFunction", {"Stage": "dev"})


class StaticJWKClient(jwt.PyJWKClient):
    """The pool's JWKS without a server (what moto serves at /<pool id>/.well-known/jwks.json)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        super().__init__("http://127.0.0.1:9/jwks.json")
        self.jwks = jwks

    def fetch_data(self) -> Any:
        return self.jwks


@pytest.fixture(scope="module")
def signer() -> tuple[Any, StaticJWKClient]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    return key, StaticJWKClient({"keys": [jwk]})


def token(key: Any, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "sub": "user-1",
        "iss": ISSUER,
        "aud": "client-1",
        "token_use": "id",
        "iat": now,
        "exp": now + 3600,
        "email": "a@example.com",
        **changes,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def test_the_authorizer_takes_an_id_token_of_the_pool(signer: tuple[Any, StaticJWKClient]) -> None:
    key, jwks = signer
    authorizer = CognitoAuthorizer("", ISSUER, {"client-1"}, jwks_client=jwks)
    assert authorizer.claims(token(key))["sub"] == "user-1"
    assert authorizer.claims("Bearer " + token(key))["sub"] == "user-1"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"token_use": "access"}, "ID token"),
        ({"iss": "https://cognito-idp.us-east-1.amazonaws.com/other-pool"}, "issuer"),
        ({"aud": "another-client"}, "another client"),
    ],
)
def test_the_authorizer_refuses(
    signer: tuple[Any, StaticJWKClient], changes: dict[str, Any], reason: str
) -> None:
    key, jwks = signer
    with pytest.raises(AuthError, match=reason):
        CognitoAuthorizer("", ISSUER, {"client-1"}, jwks_client=jwks).claims(token(key, **changes))


def test_the_authorizer_refuses_missing_and_foreign_tokens(signer: tuple[Any, StaticJWKClient]) -> None:
    _, jwks = signer
    authorizer = CognitoAuthorizer("", ISSUER, jwks_client=jwks)
    with pytest.raises(AuthError, match="no token"):
        authorizer.claims(None)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError, match="invalid"):
        authorizer.claims(token(stranger))


def test_proxy_events_have_the_shape_of_the_events_files(template: dict[str, Any]) -> None:
    route = next(r for r in routes_from_template(template) if r.path == "/v1/diamonds/similar")
    event = proxy_event(
        route=route,
        method="GET",
        raw_path="/v1/diamonds/similar",
        query="carat=0.7&cut=Ideal&n=2",
        headers=[("Host", "127.0.0.1:3000"), ("Accept", "application/json")],
        body=b"",
        path_parameters={},
        claims={"sub": "user-1"},
        source_ip="127.0.0.1",
        stage="dev",
        host="127.0.0.1:3000",
    )
    sample = json.loads((REPO / "events" / "similar_five.json").read_text())
    assert set(event) == set(sample)
    assert set(sample["requestContext"]) <= set(event["requestContext"]) | {"identity"}
    assert event["queryStringParameters"] == {"carat": "0.7", "cut": "Ideal", "n": "2"}
    assert event["requestContext"]["authorizer"]["claims"]["sub"] == "user-1"
    assert event["resource"] == "/v1/diamonds/similar" and event["body"] is None
