"""gemcast's web page: sign in, price a stone, see why, see comparable stones, earlier requests.

``create_app()`` reads ``WebSettings`` from the environment once; tests and the local runner
pass their own settings, authenticator and API client instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from gemcast_web.api import GemcastApi
from gemcast_web.auth import Authenticator, SignInThrottle, make_authenticator
from gemcast_web.sessions import SessionStore
from gemcast_web.settings import WebSettings

__all__ = ["WebContext", "create_app"]


@dataclass
class WebContext:
    settings: WebSettings
    auth: Authenticator
    api: GemcastApi
    sessions: SessionStore
    throttle: SignInThrottle


def create_app(
    settings: WebSettings | None = None,
    *,
    auth: Authenticator | None = None,
    api: GemcastApi | None = None,
    sessions: SessionStore | None = None,
) -> Flask:
    settings = settings or WebSettings.from_env()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=64 * 1024,  # a form of nine fields; nothing bigger is expected
        TEMPLATES_AUTO_RELOAD=False,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
    )
    if settings.trust_proxy:
        # EB's nginx/ALB and App Engine's front end terminate TLS and say so in X-Forwarded-Proto;
        # this lets request.is_secure (and the Secure cookie) reflect what the browser used.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    app.extensions["gemcast_web"] = WebContext(
        settings=settings,
        auth=auth or make_authenticator(settings),
        api=api or GemcastApi(settings.api_url, timeout_s=settings.api_timeout_s),
        sessions=sessions or SessionStore(settings.secret_key, idle_s=settings.session_idle_minutes * 60),
        throttle=SignInThrottle(settings.signin_account_failures, settings.signin_address_failures,
                                settings.signin_window_minutes * 60),
    )
    from gemcast_web.views import bp

    app.register_blueprint(bp)
    _configure_logging(app)
    return app


def _configure_logging(app: Flask) -> None:
    # gunicorn captures stderr; one line per event, readable in EB and Cloud Logging alike.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app.logger.setLevel(logging.INFO)


def context_of(app: Any) -> WebContext:
    ctx: WebContext = app.extensions["gemcast_web"]
    return ctx
