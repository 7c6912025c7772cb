"""The local API gateway: HTTP on 127.0.0.1 -> API Gateway REST proxy events -> the Lambda handlers.

What API Gateway does for the stack in AWS, this does on one machine, from template.yaml:

- the routes are those of the route table (``gemcast.routes``), each served by the function
  whose ``Api`` event in the template names it (path, method, ``Auth.Authorizer: NONE``,
  ``RequestModel`` with ``ValidateBody``); the two are checked against each other, so neither
  can drift;
- the Cognito authorizer: the ``Authorization`` header must hold an ID token of the user pool,
  RS256-signed by a key of the pool's JWKS (moto serves it at ``{moto}/{pool id}/.well-known/
  jwks.json``), with the pool's AWS-style issuer, a client of the pool as audience, and not
  expired; otherwise 401 and the function is never called. Its claims go to
  ``requestContext.authorizer.claims`` as strings, as API Gateway passes them;
- each request becomes a REST proxy event of the same shape as the events/ files, and the
  function's ``lambda_handler`` (imported from functions/<name>/app.py with the environment
  the template gives it) is called in process with a Lambda-like context.

What API Gateway refuses itself (unknown route or method, no or bad token, a body that fails the
model, a bad or huge Content-Length, a slow body) is answered with the template's
GatewayResponses, in the project's Error shape, and counted (``LocalGateway.rejected``); every
request gets one access-log line in the template's AccessLogSetting format. Each function runs
one event at a time (gemcast_local.runtime.LocalFunction), as a Lambda container does.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gemcast.errors import GemcastError
from gemcast_local.runtime import ACCOUNT_ID, FUNCTION_TYPE, LambdaContext, LocalFunction
from gemcast_local.template import TemplateError, resources_of_type

logger = logging.getLogger("gemcast.gateway")
access_logger = logging.getLogger("gemcast.gateway.access")  # the API's access log, in its template format

API_TYPE = "AWS::Serverless::Api"


class AuthError(GemcastError):
    """A request's token is missing, malformed, forged, expired or not an ID token of the pool."""


# ----------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """One ``Api`` event of a function in the template."""

    method: str
    path: str
    logical_id: str
    function: str  # folder under functions/
    handler: str  # "app.lambda_handler"
    auth: bool
    validate_body_model: Mapping[str, Any] | None = None
    pattern: re.Pattern[str] = field(default=re.compile(""), compare=False)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None


def _path_pattern(path: str) -> re.Pattern[str]:
    regex = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("+}"):
            regex += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            regex += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile(regex)


def routes_from_template(template: Mapping[str, Any]) -> list[Route]:
    """Every API route of the template, with its function and whether the authorizer guards it."""
    apis = dict(resources_of_type(template, API_TYPE))
    routes: list[Route] = []
    for logical_id, props in resources_of_type(template, FUNCTION_TYPE):
        for event_name, event in (props.get("Events") or {}).items():
            if not isinstance(event, dict) or event.get("Type") != "Api":
                continue
            where = f"{logical_id}.Events.{event_name}"
            ep = event.get("Properties") or {}
            if "Path" not in ep or "Method" not in ep:
                raise TemplateError(f"{where} needs Path and Method")
            api_ref = ep.get("RestApiId")
            api_id = api_ref.get("Ref") if isinstance(api_ref, dict) else None
            api_props = apis.get(str(api_id), {}) if api_id else {}
            default_auth = bool((api_props.get("Auth") or {}).get("DefaultAuthorizer"))
            authorizer = (ep.get("Auth") or {}).get("Authorizer")
            auth = authorizer != "NONE" and (default_auth or bool(authorizer))
            model = None
            request_model = ep.get("RequestModel") or {}
            if request_model.get("ValidateBody") and request_model.get("Model"):
                models = api_props.get("Models") or {}
                if request_model["Model"] not in models:
                    raise TemplateError(f"{where}: model {request_model['Model']} is not in the API's Models")
                model = models[request_model["Model"]]
            code_uri = str(props.get("CodeUri", "")).rstrip("/")
            routes.append(
                Route(
                    method=str(ep["Method"]).upper(),
                    path=str(ep["Path"]),
                    logical_id=logical_id,
                    function=Path(code_uri).name,
                    handler=str(props.get("Handler", "app.lambda_handler")),
                    auth=auth,
                    validate_body_model=model,
                    pattern=_path_pattern(str(ep["Path"])),
                )
            )
    return routes


def template_disagreements(template: Mapping[str, Any]) -> list[str]:
    """Where template.yaml's Api events and the route table (gemcast.routes) differ: a route
    missing or extra, served by another function, or guarded differently. Empty when they agree."""
    from gemcast.routes import ROUTES

    have = {(r.method, r.path): r for r in routes_from_template(template)}
    problems = []
    for route in ROUTES:
        event = have.pop((route.method, route.path), None)
        if event is None:
            problems.append(f"{route.key} has no Api event (add it to functions/{route.aws_function}'s function)")
        elif event.function != route.aws_function:
            problems.append(f"{route.key} goes to functions/{event.function}, the table says {route.aws_function}")
        elif event.auth != route.auth:
            problems.append(f"{route.key} is {'guarded' if event.auth else 'public'} in the template, "
                            f"{'guarded' if route.auth else 'public'} in the table")
    problems += [f"{method} {path} is an Api event of {r.logical_id} but not in the route table"
                 for (method, path), r in have.items()]
    return problems


def table_routes(template: Mapping[str, Any]) -> list[Route]:
    """The gateway's routes: those of the route table, each with the template function that
    serves it; a TemplateError naming every disagreement between the two."""
    from gemcast.routes import ROUTES

    problems = template_disagreements(template)
    if problems:
        raise TemplateError("template.yaml disagrees with gemcast.routes: " + "; ".join(problems))
    have = {(r.method, r.path): r for r in routes_from_template(template)}
    return [have[(route.method, route.path)] for route in ROUTES]


# ----------------------------------------------------------------------------- the authorizer


class CognitoAuthorizer:
    """Checks ID tokens of one user pool like API Gateway's Cognito authorizer."""

    def __init__(
        self, jwks_url: str, issuer: str, client_ids: set[str] | None = None, *, jwks_client: Any = None
    ) -> None:
        import jwt

        self.issuer = issuer
        self.client_ids = set(client_ids or ())
        self._jwks = jwks_client or jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=3600, timeout=5)

    def claims(self, header_value: str | None) -> dict[str, Any]:
        import jwt

        if not header_value or not header_value.strip():
            raise AuthError("no token: send the Cognito ID token in the Authorization header")
        token = header_value.strip()
        if token.lower().startswith("bearer "):
            token = token[7:].strip()
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "token_use"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the token has expired: sign in again") from exc
        except (jwt.PyJWKClientError, jwt.InvalidTokenError) as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        if claims.get("token_use") != "id":
            raise AuthError(f"an ID token is needed, got a {claims.get('token_use')} token")
        audience = claims.get("aud")
        # A Cognito ID token names its one client as a string; a list (or anything else) is refused.
        if not isinstance(audience, str) or (self.client_ids and audience not in self.client_ids):
            raise AuthError("the token was issued to another client")
        return claims


def claims_as_strings(claims: Mapping[str, Any]) -> dict[str, str]:
    """API Gateway hands claims to the function as strings (lists comma-joined)."""
    out = {}
    for key, value in claims.items():
        if isinstance(value, list):
            out[key] = ",".join(str(v) for v in value)
        elif key == "exp" and isinstance(value, int | float):
            out[key] = datetime.fromtimestamp(value, UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
        else:
            out[key] = str(value)
    return out


# ----------------------------------------------------------------------------- events


def proxy_event(
    *,
    route: Route,
    method: str,
    raw_path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    path_parameters: Mapping[str, str] | None,
    claims: Mapping[str, str] | None,
    source_ip: str,
    stage: str,
    host: str,
    request_id: str | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event, as API Gateway builds it (the events/ files' shape)."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    qs = parse_qs(query, keep_blank_values=True)
    text: str | None
    encoded = False
    if not body:
        text = None
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode(), True
    now = time.time()
    request_id = request_id or str(uuid.uuid4())
    context: dict[str, Any] = {
        "accountId": ACCOUNT_ID,
        "apiId": "local",
        "resourceId": "local",
        "resourcePath": route.path,
        "httpMethod": method,
        "path": f"/{stage}{raw_path}",
        "stage": stage,
        "protocol": "HTTP/1.1",
        "requestId": request_id,
        "extendedRequestId": request_id,
        "requestTime": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "requestTimeEpoch": int(now * 1000),
        "domainName": host,
        "domainPrefix": host.split(".")[0],
        "identity": {"sourceIp": source_ip, "userAgent": single.get("User-Agent", single.get("user-agent"))},
    }
    if claims is not None:
        context["authorizer"] = {"claims": dict(claims)}
    return {
        "resource": route.path,
        "path": raw_path,
        "httpMethod": method,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": {k: v[-1] for k, v in qs.items()} or None,
        "multiValueQueryStringParameters": qs or None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": context,
        "body": text,
        "isBase64Encoded": encoded,
    }


# ----------------------------------------------------------------------------- gateway responses

# API Gateway's own status of each response type (what a GatewayResponse without StatusCode gives).
RESPONSE_STATUS = {
    "BAD_REQUEST_BODY": 400, "BAD_REQUEST_PARAMETERS": 400, "UNAUTHORIZED": 401, "ACCESS_DENIED": 403,
    "MISSING_AUTHENTICATION_TOKEN": 403, "RESOURCE_NOT_FOUND": 404, "REQUEST_TOO_LARGE": 413,
    "THROTTLED": 429, "QUOTA_EXCEEDED": 429, "AUTHORIZER_FAILURE": 500, "INTEGRATION_FAILURE": 504,
    "INTEGRATION_TIMEOUT": 504, "DEFAULT_4XX": 400, "DEFAULT_5XX": 500,
}
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
_CONTEXT_VARIABLE = re.compile(r"\$context\.([A-Za-z][A-Za-z0-9.]*)")


def _api_properties(template: Mapping[str, Any]) -> dict[str, Any]:
    apis = list(resources_of_type(template, API_TYPE))
    return apis[0][1] if apis else {}


@dataclass
class GatewayAnswer:
    """A request the gateway answers itself, as API Gateway does, without calling a function."""

    response_type: str
    message: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


class GatewayResponses:
    """The API's GatewayResponses from template.yaml, rendered with the request's $context:
    what API Gateway answers when it refuses a request itself, and the access log line."""

    def __init__(self, template: Mapping[str, Any]) -> None:
        props = _api_properties(template)
        self.responses: dict[str, dict[str, Any]] = dict(props.get("GatewayResponses") or {})
        self.access_format = str((props.get("AccessLogSetting") or {}).get("Format") or "")

    def render(self, answer: GatewayAnswer, context: Mapping[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        status = answer.status or RESPONSE_STATUS.get(answer.response_type, 400)
        spec = self.responses.get(answer.response_type) or \
            self.responses.get("DEFAULT_5XX" if status >= 500 else "DEFAULT_4XX") or {}
        if "StatusCode" in spec and answer.status is None:
            status = int(spec["StatusCode"])
        variables = {**context, "error.message": answer.message, "error.messageString": json.dumps(answer.message),
                     "error.responseType": answer.response_type, "status": str(status)}
        template = (spec.get("ResponseTemplates") or {}).get("application/json")
        body = render_context(template, variables) if template else json.dumps({"message": answer.message})
        headers = [("Content-Type", "application/json"), *answer.headers.items()]
        for name, value in ((spec.get("ResponseParameters") or {}).get("Headers") or {}).items():
            headers.append((name, render_context(str(value), variables).strip("'")))
        return status, headers, body.encode()

    def access_line(self, context: Mapping[str, str]) -> str:
        return render_context(self.access_format, context)


def render_context(text: str, variables: Mapping[str, str]) -> str:
    """API Gateway's simple substitution of ``$context.*`` (no VTL); unknown variables are empty."""
    return _CONTEXT_VARIABLE.sub(lambda m: variables.get(m.group(1), ""), text)


# ----------------------------------------------------------------------------- the server


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class LocalGateway:
    """The HTTP server. ``start()`` loads the functions and serves on a background thread.

    ``function(logical_id)`` gives the :class:`gemcast_local.runtime.LocalFunction` of a route
    (the stack's runtime, which loads each function once)."""

    def __init__(
        self,
        routes: list[Route],
        function: Callable[[str], LocalFunction],
        authorizer: CognitoAuthorizer | None,
        *,
        template: Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int = 3000,
        stage: str = "dev",
        timeout_s: float = 30.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        self.routes = routes
        self.function = function
        self.authorizer = authorizer
        self.responses = GatewayResponses(template or {})
        self.host = host
        self.port = port
        self.stage = stage
        self.timeout_s = timeout_s
        self.read_timeout_s = read_timeout_s
        self.rejected: Counter[str] = Counter()  # gateway responses by type (the RejectedRequests metric)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalGateway:
        for route in self.routes:
            self.function(route.logical_id)  # cold starts now, not on the first request
        gateway = self

        class Handler(_RequestHandler):
            timeout = self.read_timeout_s

        Handler.gateway = gateway
        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            raise GemcastError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                "choose another port (gemcast-local up --api-port N)"
            ) from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="gemcast-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one request -------------------------------------------------------------------------
    def find_route(self, method: str, path: str) -> tuple[Route | None, dict[str, str] | None]:
        for route in self.routes:
            params = route.match(path)
            if params is not None and route.method in (method, "ANY"):
                return route, params
        return None, None

    def context(self, method: str, path: str, request_id: str, source_ip: str) -> dict[str, str]:
        """The ``$context`` variables of a request, for gateway responses and the access log."""
        return {"requestId": request_id, "httpMethod": method, "path": f"/{self.stage}{path}",
                "resourcePath": "", "stage": self.stage, "integrationLatency": "-",
                "identity.sourceIp": source_ip,
                "requestTime": datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")}

    def refuse(self, answer: GatewayAnswer, context: Mapping[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        self.rejected[answer.response_type] += 1
        status, headers, body = self.responses.render(answer, context)
        headers.append(("x-amzn-ErrorType", answer.response_type))
        return status, headers, body

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str,
        context: dict[str, str] | None = None,
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One request's answer. ``context`` (the $context variables) is filled in as it goes."""
        parts = urlsplit(target)
        path = parts.path or "/"
        route, params = self.find_route(method, path)
        if context is None:
            context = self.context(method, path, str(uuid.uuid4()), source_ip)
        request_id = context["requestId"]
        context["resourcePath"] = route.path if route else ""
        if route is None:
            # API Gateway answers an unknown path or method so, whatever the method (TRACE too).
            return self.refuse(GatewayAnswer("MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token"),
                               context)
        claims: dict[str, str] | None = None
        if route.auth:
            if self.authorizer is None:
                raise GemcastError(f"{route.method} {route.path} needs the Cognito authorizer, which is not set")
            auth_header = next((v for k, v in headers if k.lower() == "authorization"), None)
            try:
                claims = claims_as_strings(self.authorizer.claims(auth_header))
            except AuthError as exc:
                logger.info("401 on %s %s: %s", method, path, exc)
                answer = GatewayAnswer("UNAUTHORIZED", "Unauthorized", headers={"WWW-Authenticate": "Bearer"})
                return self.refuse(answer, context)
            context["authorizer.claims.sub"] = claims.get("sub", "")
        if route.validate_body_model is not None and not _body_matches(body, route.validate_body_model):
            return self.refuse(GatewayAnswer("BAD_REQUEST_BODY", "Invalid request body"), context)
        host = next((v for k, v in headers if k.lower() == "host"), f"{self.host}:{self.port}")
        event = proxy_event(route=route, method=method, raw_path=path, query=parts.query, headers=headers,
                            body=body, path_parameters=params, claims=claims, source_ip=source_ip,
                            stage=self.stage, host=host, request_id=request_id)
        called = time.perf_counter()
        try:
            function = self.function(route.logical_id)
            response = function(event, LambdaContext(route.logical_id, timeout_s=self.timeout_s))
            context["integrationLatency"] = str(int((time.perf_counter() - called) * 1000))
        except Exception:
            # What API Gateway answers when the function fails; the trace stays in our log.
            logger.error("%s raised on %s %s:\n%s", route.logical_id, method, path, traceback.format_exc())
            return self.refuse(GatewayAnswer("DEFAULT_5XX", "Internal server error", status=502), context)
        proxied = _proxy_response(response, request_id)
        if proxied is None:
            logger.error("%s returned no proxy response: %r", route.logical_id, response)
            return self.refuse(GatewayAnswer("DEFAULT_5XX", "Internal server error", status=502), context)
        return proxied


def _body_matches(body: bytes, model: Mapping[str, Any]) -> bool:
    """API Gateway's request validation against the template's model (JSON Schema draft 4)."""
    import jsonschema

    try:
        document = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is a bad body, not a crash
        return False
    return bool(jsonschema.Draft4Validator(dict(model)).is_valid(document))


def _proxy_response(response: Any, request_id: str) -> tuple[int, list[tuple[str, str]], bytes] | None:
    if not isinstance(response, Mapping) or not isinstance(response.get("statusCode"), int):
        return None
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, values in (response.get("multiValueHeaders") or {}).items():
        for value in values:
            headers.append((name, str(value)))
        seen.add(name.lower())
    for name, value in (response.get("headers") or {}).items():
        if name.lower() not in seen:
            headers.append((name, str(value)))
    headers.append(("x-amzn-RequestId", request_id))
    body = response.get("body") or ""
    data = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()
    return int(response["statusCode"]), headers, data


class _BadRequest(Exception):  # noqa: N818 - a control-flow signal inside the request handler
    def __init__(self, answer: GatewayAnswer, close: bool = True) -> None:
        self.answer, self.close = answer, close


class _RequestHandler(BaseHTTPRequestHandler):
    gateway: LocalGateway
    protocol_version = "HTTP/1.1"  # keep-alive, as clients of API Gateway get
    # Headers and body are two writes: with Nagle's algorithm on, a keep-alive client's
    # delayed ACK adds ~40 ms to every request.
    disable_nagle_algorithm = True
    server_version = "gemcast-local-gateway"

    def _read_body(self) -> bytes:
        """The body, bounded: a bad or huge Content-Length, a bad chunk or a slow body is answered."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not (raw.isascii() and raw.isdigit()):
            raise _BadRequest(GatewayAnswer("DEFAULT_4XX", f"Content-Length must be a whole number, got {raw!r}"))
        length = int(raw)
        if length > MAX_BODY_BYTES:
            raise _BadRequest(GatewayAnswer("REQUEST_TOO_LARGE", "Request Too Long"))
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            raise _BadRequest(GatewayAnswer("DEFAULT_4XX", "the body ended before its Content-Length"))
        return data

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while True:
            size_line = self.rfile.readline(66).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _BadRequest(GatewayAnswer("DEFAULT_4XX", "malformed chunked body")) from None
            if size < 0 or len(data) + size > MAX_BODY_BYTES:
                raise _BadRequest(GatewayAnswer("REQUEST_TOO_LARGE", "Request Too Long"))
            if size == 0:
                while self.rfile.readline(8192).strip():
                    pass  # trailers
                return bytes(data)
            data += self.rfile.read(size)
            self.rfile.readline(3)

    def _serve(self) -> None:
        started = time.perf_counter()
        gateway = self.gateway
        request_id = str(uuid.uuid4())
        path = urlsplit(self.path).path or "/"
        context = gateway.context(self.command, path, request_id, self.client_address[0])
        try:
            body = self._read_body()
            status, headers, data = gateway.handle(self.command, self.path, list(self.headers.items()), body,
                                                   self.client_address[0], context)
        except _BadRequest as bad:
            self.close_connection = bad.close
            status, headers, data = gateway.refuse(bad.answer, context)
        except TimeoutError:
            self.close_connection = True
            status, headers, data = gateway.refuse(
                GatewayAnswer("DEFAULT_4XX", "the request body did not arrive in time", status=408), context)
        except Exception:
            # The stand-in must answer every request with a status, as API Gateway does.
            logger.error("gateway fault on %s %s:\n%s", self.command, self.path, traceback.format_exc())
            status, headers, data = gateway.refuse(GatewayAnswer("DEFAULT_5XX", "Internal server error"), context)
        self._access_log(context, status, headers, data, started)
        self._write(status, headers, data)

    def _access_log(self, context: dict[str, str], status: int, headers: list[tuple[str, str]], data: bytes,
                    started: float) -> None:
        """The request's line in the template's access-log format (logged before the answer is sent,
        so a client that has its answer finds its line)."""
        context.update(status=str(status), responseLength=str(len(data)),
                       responseLatency=str(int((time.perf_counter() - started) * 1000)))
        context["error.responseType"] = next((v for k, v in headers if k == "x-amzn-ErrorType"), "")
        access_logger.info(self.gateway.responses.access_line(context))

    def _write(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        try:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in {"content-length", "connection", "transfer-encoding", "x-amzn-errortype"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client went away; nothing left to answer

    def __getattr__(self, name: str) -> Any:
        # Every method reaches the gateway (TRACE, PROPFIND, ...), which answers as API Gateway.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The server's own refusals (a malformed request line, headers too long): JSON, not HTML."""
        self.close_connection = True
        context = self.gateway.context(getattr(self, "command", "") or "-", "/", str(uuid.uuid4()),
                                       self.client_address[0])
        status, headers, data = self.gateway.refuse(
            GatewayAnswer("DEFAULT_4XX" if code < 500 else "DEFAULT_5XX", message or "Bad Request", status=code),
            context)
        if not getattr(self, "command", None):
            self.command = "GET"
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # a status line and headers, even for a garbled request
        self._access_log(context, status, headers, data, time.perf_counter())
        self._write(status, headers, data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # one access line per request is logged by _serve
