"""The local gateway without a network: routes read from template.yaml, the Cognito authorizer's
checks (against a JWKS file), and the proxy events it builds."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gemcast_local.gateway import AuthError, CognitoAuthorizer, LocalGateway, proxy_event, routes_from_template
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
        ({"aud": ["client-1", "another-client"]}, "another client"),  # a list is no Cognito ID token
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


# ----------------------------------------------------------------------------- hostile clients


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event["path"] == "/v1/health" and event["queryStringParameters"] == {"fail": "1"}:
        raise RuntimeError("the function failed")
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"length": len(event["body"] or "")})}


@pytest.fixture(scope="module")
def gateway(template: dict[str, Any], signer: tuple[Any, StaticJWKClient]) -> Iterator[LocalGateway]:
    """The gateway over HTTP with the template's routes, responses and access-log format; every
    route answered by ``echo`` (the gateway's own answers are what is tested here)."""
    _, jwks = signer
    authorizer = CognitoAuthorizer("", ISSUER, {"client-1"}, jwks_client=jwks)
    with LocalGateway(routes_from_template(template), lambda _logical_id: echo, authorizer,  # type: ignore[arg-type,return-value]
                      template=template, port=0, read_timeout_s=0.5) as running:
        yield running


def raw(gateway: LocalGateway, request: bytes, *, pause_s: float = 0.0) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are; the status and JSON body of the answer."""
    with socket.create_connection((gateway.host, gateway.port), timeout=10) as sock:
        sock.sendall(request)
        time.sleep(pause_s)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    return 0


def post(path: str, body: bytes, token_value: str, length: str | None = None) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {token_value}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length if length is not None else len(body)}"
            "\r\n\r\n").encode() + body


def error_shape(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error", "request_id"} and body["request_id"]
    assert isinstance(body["error"]["message"], str) and set(body["error"]) <= {"message", "fields"}
    return dict(body["error"])


def test_every_hostile_request_is_answered_with_a_status_in_the_error_shape(
    gateway: LocalGateway, signer: tuple[Any, StaticJWKClient], caplog: pytest.LogCaptureFixture
) -> None:
    key, _ = signer
    good = token(key)
    cases = {
        "deep nesting": (post("/v1/predictions", b"[" * 200_000, good), 400),
        "negative length": (post("/v1/predictions", b"{}", good, "-5"), 400),
        "non-ASCII digits in the length": (post("/v1/predictions", b"{}", good, "\uff12").replace(
            "\uff12".encode(), "\uff12".encode("utf-8")), 400),
        "huge length": (post("/v1/predictions", b"{}", good, str(10**15)), 413),
        "no token": (post("/v1/predictions", b"{}", ""), 401),
        "aud as a list": (post("/v1/predictions", b"{}", token(key, aud=["client-1"])), 401),
        "TRACE": (b"TRACE /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", 403),
        "unknown route": (b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n", 403),
        "garbage request line": (b"\x16\x03\x01 nonsense\r\n\r\n", 400),
        "the function fails": (b"GET /v1/health?fail=1 HTTP/1.1\r\nHost: x\r\n\r\n", 502),
    }
    before = sum(gateway.rejected.values())
    with caplog.at_level(logging.INFO, logger="gemcast.gateway.access"):
        for name, (request, status) in cases.items():
            answered, body = raw(gateway, request)
            assert answered == status, name
            error_shape(body)
    assert sum(gateway.rejected.values()) - before == len(cases)
    assert gateway.rejected["BAD_REQUEST_BODY"] >= 1 and gateway.rejected["UNAUTHORIZED"] >= 2
    # Every request has its access-log line, in the template's format, with the refusal's type.
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gemcast.gateway.access"]
    assert {line["errorType"] for line in lines} >= {"BAD_REQUEST_BODY", "UNAUTHORIZED", "REQUEST_TOO_LARGE",
                                                      "MISSING_AUTHENTICATION_TOKEN", "DEFAULT_5XX"}


def test_a_body_that_the_model_refuses_names_the_body_and_a_good_one_passes(
    gateway: LocalGateway, signer: tuple[Any, StaticJWKClient]
) -> None:
    key, _ = signer
    status, body = raw(gateway, post("/v1/predictions", b'"a string"', token(key)))
    assert status == 400 and "body" in error_shape(body)["fields"]
    assert raw(gateway, post("/v1/predictions", b'{"carat": 1}', token(key)))[0] == 200


def test_a_slow_body_is_answered_408_not_held_open(gateway: LocalGateway, signer: tuple[Any, StaticJWKClient]) -> None:
    key, _ = signer
    status, body = raw(gateway, post("/v1/predictions", b"{", token(key), "10"), pause_s=0.1)
    assert status == 408 and "in time" in error_shape(body)["message"]
