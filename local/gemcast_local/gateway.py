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

Handlers run one at a time: powertools' resolver keeps the current event in class state, and
Lambda never runs two events in one container at once either. JWT checks run in parallel.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gemcast.errors import GemcastError
from gemcast_local.template import TemplateError, is_intrinsic, resources_of_type

logger = logging.getLogger("gemcast.gateway")

REPO = Path(__file__).resolve().parents[2]
FUNCTION_TYPE = "AWS::Serverless::Function"
API_TYPE = "AWS::Serverless::Api"
ACCOUNT_ID = "123456789012"  # moto's default account


class AuthError(GemcastError):
    """A request's token is missing, malformed, forged, expired or not an ID token of the pool."""


# ----------------------------------------------------------------------------- intrinsics


class Resolver:
    """Resolves ``Ref``, ``Fn::GetAtt`` and ``Fn::Sub`` against known local values.

    ``values`` maps a Ref name (parameter, pseudo parameter or logical id) to its value and
    ``"Logical.Attribute"`` to a GetAtt value. Anything unknown is a TemplateError naming it.
    """

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)

    def resolve(self, value: Any, where: str) -> str:
        if isinstance(value, str | int | float | bool) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if not is_intrinsic(value):
            raise TemplateError(f"{where}: cannot use {value!r} locally")
        ((kind, arg),) = value.items()
        if kind == "Ref":
            return self._lookup(str(arg), where)
        if kind == "Fn::GetAtt":
            parts = arg if isinstance(arg, list) else str(arg).split(".", 1)
            return self._lookup(".".join(str(p) for p in parts), where)
        if kind == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            extra = {k: self.resolve(v, f"{where}.{k}") for k, v in local.items()}
            return re.sub(
                r"\$\{([^}!]+)\}", lambda m: extra.get(m.group(1)) or self._lookup(m.group(1), where), text
            )
        raise TemplateError(f"{where}: {kind} is not supported by the local stack")

    def _lookup(self, name: str, where: str) -> str:
        if name not in self.values:
            raise TemplateError(f"{where}: the local stack has no value for {name}")
        return self.values[name]


def parameter_defaults(template: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(spec.get("Default", "")) for name, spec in (template.get("Parameters") or {}).items()}


def function_environment(template: Mapping[str, Any], logical_id: str, resolver: Resolver) -> dict[str, str]:
    """The environment the template gives a function: Globals, then its own variables."""
    props = dict(template["Resources"][logical_id].get("Properties") or {})
    merged: dict[str, Any] = {}
    globals_env = ((template.get("Globals") or {}).get("Function") or {}).get("Environment") or {}
    merged.update(globals_env.get("Variables") or {})
    merged.update(((props.get("Environment") or {}).get("Variables")) or {})
    return {
        name: resolver.resolve(value, f"{logical_id}.Environment.{name}") for name, value in merged.items()
    }


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
        if self.client_ids and claims.get("aud") not in self.client_ids:
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
    request_id = str(uuid.uuid4())
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


@dataclass
class LocalContext:
    """The attributes of a Lambda context that handlers and powertools read."""

    function_name: str
    aws_request_id: str
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    log_group_name: str = ""
    log_stream_name: str = "local"
    deadline: float = 0.0

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


# ----------------------------------------------------------------------------- functions


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` for the duration (a function's cold start reads it)."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, old in saved.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old


def import_function(
    function: str, env: Mapping[str, str], functions_dir: Path = REPO / "functions"
) -> ModuleType:
    """Import functions/<function>/app.py with ``env`` set, as Lambda's cold start would."""
    path = functions_dir / function / "app.py"
    if not path.is_file():
        raise TemplateError(f"template.yaml routes to {function}, but {path} does not exist")
    name = f"gemcast_local_fn_{function}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with environment(env):
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    return module


# ----------------------------------------------------------------------------- the server


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


class LocalGateway:
    """The HTTP server. ``start()`` imports the functions and serves on a background thread."""

    def __init__(
        self,
        routes: list[Route],
        function_env: Callable[[str], Mapping[str, str]],
        authorizer: CognitoAuthorizer | None,
        *,
        host: str = "127.0.0.1",
        port: int = 3000,
        stage: str = "dev",
        functions_dir: Path = REPO / "functions",
        timeout_s: float = 30.0,
    ) -> None:
        self.routes = routes
        self.function_env = function_env
        self.authorizer = authorizer
        self.host = host
        self.port = port
        self.stage = stage
        self.functions_dir = functions_dir
        self.timeout_s = timeout_s
        self.handlers: dict[str, Callable[[dict[str, Any], Any], dict[str, Any]]] = {}
        self._invoke_lock = threading.Lock()
        self._envs: dict[str, dict[str, str]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def load_functions(self) -> None:
        for route in self.routes:
            if route.logical_id in self.handlers:
                continue
            module_name, _, attr = route.handler.rpartition(".")
            if module_name != "app":
                raise TemplateError(f"{route.logical_id}: handler {route.handler} is not app.<function>")
            self._envs[route.logical_id] = dict(self.function_env(route.logical_id))
            module = import_function(route.function, self._envs[route.logical_id], self.functions_dir)
            self.handlers[route.logical_id] = getattr(module, attr)

    def start(self) -> LocalGateway:
        self.load_functions()
        gateway = self

        class Handler(_RequestHandler):
            pass

        Handler.gateway = gateway
        try:
            self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            raise GemcastError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                "choose another port (gemcast up --api-port N)"
            ) from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gemcast-gateway", daemon=True
        )
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
    def find_route(self, method: str, path: str) -> tuple[Route | None, dict[str, str] | None, bool]:
        """(route, path parameters, whether the path exists under another method)."""
        path_known = False
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            path_known = True
            if route.method in (method, "ANY"):
                return route, params, True
        return None, None, path_known

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        parts = urlsplit(target)
        path = parts.path or "/"
        route, params, path_known = self.find_route(method, path)
        if route is None:
            status = 405 if path_known else 404
            message = f"{method} is not allowed on {path}" if path_known else f"no route {method} {path}"
            return status, [("Content-Type", "application/json")], _json_bytes({"message": message})
        claims: dict[str, str] | None = None
        if route.auth:
            if self.authorizer is None:
                raise GemcastError(
                    f"{route.method} {route.path} needs the Cognito authorizer, which is not set"
                )
            auth_header = next((v for k, v in headers if k.lower() == "authorization"), None)
            try:
                claims = claims_as_strings(self.authorizer.claims(auth_header))
            except AuthError as exc:
                return (
                    401,
                    [("Content-Type", "application/json"), ("WWW-Authenticate", "Bearer")],
                    _json_bytes({"message": "Unauthorized", "reason": str(exc)}),
                )
        if route.validate_body_model is not None and not _body_matches(body, route.validate_body_model):
            return (
                400,
                [("Content-Type", "application/json")],
                _json_bytes({"message": "Invalid request body"}),
            )
        host = next((v for k, v in headers if k.lower() == "host"), f"{self.host}:{self.port}")
        event = proxy_event(
            route=route,
            method=method,
            raw_path=path,
            query=parts.query,
            headers=headers,
            body=body,
            path_parameters=params,
            claims=claims,
            source_ip=source_ip,
            stage=self.stage,
            host=host,
        )
        request_id = event["requestContext"]["requestId"]
        context = LocalContext(
            function_name=route.logical_id,
            aws_request_id=str(uuid.uuid4()),
            deadline=time.monotonic() + self.timeout_s,
        )
        handler = self.handlers[route.logical_id]
        try:
            # Lambda runs a handler in its function's environment for the container's whole
            # life, not only at import: a client created at first use must see it too.
            with self._invoke_lock, environment(self._envs[route.logical_id]):
                response = handler(event, context)
        except Exception:
            # What API Gateway answers when the function fails; the trace stays in our log.
            logger.error("%s raised on %s %s:\n%s", route.logical_id, method, path, traceback.format_exc())
            return (
                502,
                [("Content-Type", "application/json"), ("x-amzn-RequestId", request_id)],
                _json_bytes({"message": "Internal server error"}),
            )
        return _proxy_response(response, request_id)


def _body_matches(body: bytes, model: Mapping[str, Any]) -> bool:
    """API Gateway's request validation against the template's model (JSON Schema draft 4)."""
    import jsonschema

    try:
        document = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        return False
    return bool(jsonschema.Draft4Validator(dict(model)).is_valid(document))


def _proxy_response(response: Mapping[str, Any], request_id: str) -> tuple[int, list[tuple[str, str]], bytes]:
    if not isinstance(response, Mapping) or "statusCode" not in response:
        logger.error("the function returned no proxy response: %r", response)
        return 502, [("Content-Type", "application/json")], _json_bytes({"message": "Internal server error"})
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


class _RequestHandler(BaseHTTPRequestHandler):
    gateway: LocalGateway
    protocol_version = "HTTP/1.1"  # keep-alive, as clients of API Gateway get
    # Headers and body are two writes: with Nagle's algorithm on, a keep-alive client's
    # delayed ACK adds ~40 ms to every request.
    disable_nagle_algorithm = True
    server_version = "gemcast-local-gateway"

    def _serve(self) -> None:
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            status, headers, data = self.gateway.handle(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
        except GemcastError as exc:
            status, headers, data = (
                500,
                [("Content-Type", "application/json")],
                _json_bytes({"message": str(exc)}),
            )
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        logger.info(
            "%s %s -> %d in %.1f ms", self.command, self.path, status, (time.perf_counter() - started) * 1000
        )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # one line per request is logged by _serve
