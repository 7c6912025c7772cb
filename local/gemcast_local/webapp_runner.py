"""The web app on 127.0.0.1, beside the local API: the same gunicorn command as Elastic Beanstalk
and App Engine run, pointed at the local gateway and moto's Cognito pool.

    server = start_webapp(api_url, user_pool_id, client_id, moto.env(), port=None)
    print(server.url)   # http://127.0.0.1:<port>
    server.stop()
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

from gemcast_local.servers import StandInServer

WEBAPP_DIR = Path(__file__).resolve().parents[2] / "webapp"


class WebAppServer(StandInServer):
    """gunicorn serving webapp/application.py in its own process group."""

    name = "webapp"
    probe_path = "/healthz"
    default_timeout_s = 30.0

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"{self.host}:{self.port}",
            # Sessions live in the worker's memory: one worker, threads for concurrency (as deployed).
            "--workers",
            "1",
            "--threads",
            "4",
            "--chdir",
            str(WEBAPP_DIR),
            "--access-logfile",
            "-",
            "application:application",
        ]

    def env(self) -> dict[str, str]:
        return {"WEBAPP_URL": self.url}


def start_webapp(
    api_url: str,
    user_pool_id: str,
    client_id: str,
    aws_env: Mapping[str, str],
    port: int | None = None,
    *,
    log_path: str | None = None,
) -> WebAppServer:
    """Start the web app and wait until it answers; the caller stops it with ``.stop()``.

    ``aws_env`` is the moto server's environment (AWS_ENDPOINT_URL, keys, region): boto3 in the
    web app then signs in against the local stack's user pool.
    """
    env = {
        **dict(aws_env),
        "API_URL": api_url,
        "AUTH_PROVIDER": "cognito",
        "USER_POOL_ID": user_pool_id,
        "USER_POOL_CLIENT_ID": client_id,
        "SECRET_KEY": secrets.token_hex(32),
        # No proxy in front locally: nobody's X-Forwarded-* header is to be trusted.
        "TRUST_PROXY": "false",
        "PYTHONUNBUFFERED": "1",
    }
    server = WebAppServer(port=port, log_path=log_path, extra_env=env)
    return server.start()
