"""A local SageMaker runtime: InvokeEndpoint in front of a serving process, failing as SageMaker does.

boto3's ``sagemaker-runtime`` client, pointed here with ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``,
calls ``POST /endpoints/{name}/invocations``; this stand-in passes the body, Content-Type,
Accept and ``X-Amzn-SageMaker-Custom-Attributes`` to the container's ``POST /invocations`` and
answers as the real service does (the wire shapes are those of botocore's service model for
sagemaker-runtime 2017-05-13):

- the container's 2xx: its body and Content-Type, with ``x-Amzn-Invoked-Production-Variant``;
- the container's 4xx or 5xx: ``424 ModelError`` whose JSON carries ``OriginalStatusCode``,
  ``OriginalMessage`` (the container's body), ``LogStreamArn`` and SageMaker's ``Message``;
- no answer within the timeout (60 s, SageMaker's limit): ``424 ModelError`` saying the
  invocation timed out, with OriginalStatusCode 0;
- a container that refuses connections (stopped, or restarting on a new champion):
  ``503 ServiceUnavailable``;
- an endpoint name it does not serve: ``400 ValidationError`` ("Endpoint ... not found");
- more requests at once than ``--max-concurrency`` (a serverless endpoint's MaxConcurrency):
  ``400 ThrottlingException``.

Run: ``python -m gemcast_local.sagemaker_runtime --port 8081 --container http://127.0.0.1:8080
--endpoint gemcast-dev``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
_FORWARDED = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")
MODEL_ERROR_TYPE = "ModelError:http://internal.amazon.com/coral/com.amazon.sagemaker/"


class RuntimeStandIn:
    """The InvokeEndpoint behaviour, separate from the HTTP server that carries it."""

    def __init__(self, container_url: str, *, endpoints: set[str] | None = None, timeout_s: float = 60.0,
                 max_concurrency: int | None = None) -> None:
        parts = urllib.parse.urlsplit(container_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 8080
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self.max_concurrency = max_concurrency
        self._in_flight = 0
        self._lock = threading.Lock()

    def point_at(self, container_url: str) -> None:
        """Send the next invocations to ``container_url`` (the local stack's new champion)."""
        parts = urllib.parse.urlsplit(container_url)
        with self._lock:
            self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 8080

    def log_stream_arn(self, endpoint: str) -> str:
        return (f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/{endpoint}:"
                f"log-stream:AllTraffic/i-local")

    def invoke(self, endpoint: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if self.endpoints is not None and endpoint not in self.endpoints:
            return _aws_error(400, "ValidationError", f"Endpoint {endpoint} of account {ACCOUNT} not found.")
        with self._lock:
            if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
                return _aws_error(400, "ThrottlingException", "Rate exceeded")
            self._in_flight += 1
        try:
            return self._forward(endpoint, body, headers)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _forward(self, endpoint: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            connection.request("POST", "/invocations", body=body,
                               headers={k: v for k, v in headers.items() if k in _FORWARDED})
            answer = connection.getresponse()
            data = answer.read()
            status, kind = answer.status, answer.getheader("Content-Type", "application/octet-stream")
            custom = answer.getheader("X-Amzn-SageMaker-Custom-Attributes")
        except TimeoutError:
            return self._model_error(endpoint, 0, "Your invocation timed out while waiting for a response from "
                                     "container primary. Review the latency metrics for each container in "
                                     "Amazon CloudWatch, resolve the issue, and try again.")
        except OSError as exc:  # refused or reset: the container is not there (stopped, restarting)
            return _aws_error(503, "ServiceUnavailable", f"The endpoint {endpoint} is unavailable: {exc}")
        finally:
            connection.close()
        if 200 <= status < 300:
            out = {"Content-Type": kind, "x-Amzn-Invoked-Production-Variant": "AllTraffic"}
            if custom:
                out["X-Amzn-SageMaker-Custom-Attributes"] = custom
            return 200, out, data
        return self._model_error(endpoint, status, data.decode("utf-8", "replace"))

    def _model_error(self, endpoint: str, original_status: int, original: str) -> tuple[int, dict[str, str], bytes]:
        side = "client" if 400 <= original_status < 500 else "server"
        arn = self.log_stream_arn(endpoint)
        payload = {
            "ErrorCode": f"{side.upper()}_ERROR_FROM_MODEL",
            "LogStreamArn": arn,
            "Message": f'Received {side} error ({original_status}) from primary with message "{original}". '
                       f"See the log stream {arn} for more information.",
            "OriginalMessage": original,
            "OriginalStatusCode": original_status,
        }
        return 424, {"Content-Type": "application/json", "x-amzn-ErrorType": MODEL_ERROR_TYPE}, _json(payload)


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _aws_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    """An error as rest-json services write it: the code in x-amzn-ErrorType and in the body."""
    return status, {"Content-Type": "application/json", "x-amzn-ErrorType": code}, _json(
        {"__type": code, "message": message})


def make_server(host: str, port: int, runtime: RuntimeStandIn) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            match = _PATH.match(urllib.parse.urlsplit(self.path).path)
            length = self.headers.get("Content-Length", "0")
            body = self.rfile.read(int(length)) if length.isdigit() else b""
            if match is None:
                status, headers, data = _aws_error(404, "UnknownOperationException", f"no operation {self.path}")
            else:
                status, headers, data = runtime.invoke(urllib.parse.unquote(match.group(1)), body,
                                                       {k: v for k, v in self.headers.items()})
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(data)),
                                "x-amzn-RequestId": "00000000-0000-0000-0000-000000000000"}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - readiness probe of the local stack
            data = b"{}"
            self.send_response(200 if self.path == "/ping" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            return

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


class LocalRuntime:
    """The stand-in served from a thread of the local stack's process, on a port that stays
    the same while the container behind it changes (``point_at``)."""

    def __init__(self, container_url: str, *, endpoints: set[str] | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.runtime = RuntimeStandIn(container_url, endpoints=endpoints)
        self.server = make_server(host, port, self.runtime)
        self._thread = threading.Thread(target=self.server.serve_forever, name="sagemaker-runtime", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url}

    def point_at(self, container_url: str) -> None:
        self.runtime.point_at(container_url)

    def start(self) -> LocalRuntime:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gemcast_local.sagemaker_runtime", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--container", required=True, help="the serving process, e.g. http://127.0.0.1:8080")
    parser.add_argument("--endpoint", action="append", help="an endpoint name served (default: any name)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds the container has (default 60)")
    parser.add_argument("--max-concurrency", type=int, help="requests at once before ThrottlingException")
    args = parser.parse_args(argv)
    runtime = RuntimeStandIn(args.container, endpoints=set(args.endpoint) if args.endpoint else None,
                             timeout_s=args.timeout, max_concurrency=args.max_concurrency)
    server = make_server(args.host, args.port, runtime)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
