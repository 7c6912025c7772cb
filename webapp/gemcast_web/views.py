"""The pages. Each view reads the form, makes one or two API calls with the user's token, and
renders; sessions, CSRF and token refresh are handled once, around every request."""

from __future__ import annotations

import base64
import hmac
import time
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from gemcast.routes import by_operation
from gemcast_web import WebContext, context_of, history
from gemcast_web.api import ApiAnswer, ApiAuthError, ApiUnavailableError
from gemcast_web.auth import SignInError, WrongPasswordError, safe_next
from gemcast_web.markdown import render as render_markdown
from gemcast_web.sessions import WebSession
from gemcast_web.stones import (
    DEFAULTS,
    form_fields,
    group_bars,
    money,
    percent,
    reason_bars,
    shown_value,
    stone_from_form,
    stone_summary,
    what_if_rows,
)

bp = Blueprint("web", __name__)

COOKIE = "gemcast_session"
PLOT_FILE = "pred_vs_actual.svg"
MY_REQUESTS_LIMIT = 25
PREDICT_ROUTE = by_operation("createPrediction").key  # the prediction log's route of a pricing
# No scripts at all; styles and images only from this app (the model plot is a data: image).
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

T = TypeVar("T")


class SessionEndedError(Exception):
    """The API refused the user's token and refreshing failed: the user must sign in again."""


def web() -> WebContext:
    return context_of(current_app)


def session() -> WebSession:
    s: WebSession = g.web_session
    return s


@bp.app_template_filter("money")
def _money(value: Any, signed: bool = False) -> str:
    return str(money(value, signed=signed))


@bp.app_template_filter("percent")
def _percent(value: Any) -> str:
    return str(percent(value))


@bp.app_template_global("csrf_token")
def _csrf_token() -> str:
    return str(session().csrf)


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    s = g.get("web_session")
    return {"signed_in_as": s.tokens.email if s is not None and s.tokens else None}


@bp.before_app_request
def _load_session() -> ResponseReturnValue | None:
    g.web_session = None
    if request.endpoint in (None, "static", "web.healthz"):
        return None
    store = web().sessions
    found = store.from_cookie(request.cookies.get(COOKIE))
    # An anonymous session lives in its cookie: written back on every answer.
    g.set_cookie = found is None or not found.signed_in
    g.web_session = found or store.new()
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        if not sent or not hmac.compare_digest(sent, session().csrf):
            return render_template(
                "error.html",
                title="This form has expired",
                message="The page was open too long or was sent from elsewhere. Nothing was sent; "
                "please go back, reload the page and try again.",
            ), 400
    return None


@bp.after_app_request
def _finish(response: Response) -> Response:
    s: WebSession | None = g.get("web_session")
    if s is not None and g.get("set_cookie"):
        mode = web().settings.cookie_secure
        secure = mode == "always" or (mode == "auto" and request.is_secure)
        response.set_cookie(
            COOKIE, web().sessions.cookie_for(s), httponly=True, samesite="Lax", secure=secure, path="/"
        )
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    if response.mimetype == "text/html":
        # Pages hold the user's prices and requests: never cached by a browser or a proxy.
        response.headers["Cache-Control"] = "no-store"
    return response


def _switch_session(new: WebSession) -> None:
    g.web_session = new
    g.set_cookie = True


def login_required(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        if not session().signed_in:
            return redirect(url_for("web.signin", next=request.path))
        return view(*args, **kwargs)

    return wrapper


def call_api(call: Callable[[str], T]) -> T:
    """Run an API call with the user's ID token, refreshing it once when it is stale or refused."""
    s = session()
    ctx = web()
    assert s.tokens is not None
    if s.tokens.expires_at - 60 < time.time():
        _refresh_or_end(ctx, s)
    try:
        return call(s.tokens.id_token)
    except ApiAuthError:
        _refresh_or_end(ctx, s)
        try:
            return call(s.tokens.id_token)
        except ApiAuthError as exc:
            _end_session(s, "The service did not accept your sign-in. Please sign in again.")
            raise SessionEndedError() from exc


def _refresh_or_end(ctx: WebContext, s: WebSession) -> None:
    assert s.tokens is not None
    try:
        s.tokens = ctx.auth.refresh(s.tokens)
    except SignInError as exc:
        _end_session(s, str(exc))
        raise SessionEndedError() from exc


def _end_session(s: WebSession, message: str) -> None:
    store = web().sessions
    store.drop(s.id)
    fresh = store.new()
    fresh.flash.append(message)
    _switch_session(fresh)


@bp.app_errorhandler(SessionEndedError)
def _session_ended(exc: SessionEndedError) -> ResponseReturnValue:
    return redirect(url_for("web.signin", next=request.path))


@bp.app_errorhandler(ApiUnavailableError)
def _api_down(exc: ApiUnavailableError) -> ResponseReturnValue:
    return render_template("error.html", title="The pricing service is unavailable", message=str(exc)), 503


def _safe_next(target: str | None) -> str:
    return safe_next(target) or url_for("web.price")


# -- pages -------------------------------------------------------------------------------------


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return {"status": "ok"}


@bp.get("/")
def index() -> ResponseReturnValue:
    return redirect(url_for("web.price" if session().signed_in else "web.signin"))


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> ResponseReturnValue:
    s = session()
    next_url = _safe_next(request.values.get("next"))
    if s.signed_in:
        return redirect(next_url)
    messages, s.flash = s.flash, []
    email = request.form.get("email", "").strip()
    if request.method == "GET":
        return render_template("signin.html", email="", error=None, messages=messages, next_url=next_url)
    password = request.form.get("password", "")
    if not email or not password:
        return render_template(
            "signin.html",
            email=email,
            error="Enter your email and your password.",
            messages=[],
            next_url=next_url,
        ), 400
    throttle, address = web().throttle, request.remote_addr or "unknown"
    refusal = throttle.refusal(email, address)
    if refusal is not None:
        message, wait_s = refusal
        return render_template(
            "signin.html", email=email, error=message, messages=[], next_url=next_url
        ), 429, {"Retry-After": str(wait_s)}
    try:
        tokens = web().auth.sign_in(email, password)
    except SignInError as exc:
        if isinstance(exc, WrongPasswordError):
            throttle.failed(email, address)
        return render_template(
            "signin.html", email=email, error=str(exc), messages=[], next_url=next_url
        ), 401
    throttle.succeeded(email)
    fresh = web().sessions.sign_in(s, tokens)
    _switch_session(fresh)
    current_app.logger.info("signed in: subject %s", tokens.subject)
    return redirect(next_url)


@bp.post("/signout")
def signout() -> ResponseReturnValue:
    s = session()
    if s.tokens is not None:
        web().auth.sign_out(s.tokens)
    _end_session(s, "You are signed out.")
    return redirect(url_for("web.signin"))


@bp.route("/price", methods=["GET", "POST"])
@login_required
def price() -> ResponseReturnValue:
    values = dict(DEFAULTS)
    page: dict[str, Any] = {
        "fields": form_fields(),
        "values": values,
        "errors": {},
        "form_error": None,
        "answer": None,
        "bars": [],
        "similar": None,
        "similar_error": None,
        "groups": [],
        "what_if": [],
        "coverages": RANGE_COVERAGES,
        "coverage": _coverage(request.form.get("coverage")),
    }
    if request.method == "GET":
        return render_template("price.html", **page)
    values.update({k: request.form.get(k, "") for k in DEFAULTS})
    stone = stone_from_form(request.form)
    try:
        # The range at the chosen coverage and the what-if table ride along as parameters.
        ask = {**stone, "parameters": {"coverage": page["coverage"], "what_if": True}}
        answer = call_api(lambda token: web().api.predict(token, ask))
    except ApiUnavailableError as exc:
        page["form_error"] = str(exc)
        return render_template("price.html", **page), 503
    if not answer.ok:
        page["errors"] = answer.field_errors
        page["form_error"] = _form_level_error(answer)
        return render_template("price.html", **page), 400
    page["answer"] = answer.body
    page["bars"] = reason_bars(answer.body.get("reasons"))
    page["groups"] = group_bars(answer.body.get("reason_groups"))
    page["what_if"] = what_if_rows(answer.body.get("what_if"))
    settings = web().settings
    try:
        similar = call_api(
            lambda token: web().api.similar(
                token,
                carat=stone["carat"],
                cut=stone["cut"],
                color=stone["color"],
                clarity=stone["clarity"],
                n=settings.similar_n,
            )
        )
        if similar.ok:
            page["similar"] = similar.body
        else:
            page["similar_error"] = similar.error_message or f"the API answered {similar.status}"
    except ApiUnavailableError as exc:
        page["similar_error"] = str(exc)
    return render_template("price.html", **page)


RANGE_COVERAGES = (50, 80, 95)


def _coverage(value: Any) -> int:
    """The range coverage the form asks for (80 % unless one of RANGE_COVERAGES was chosen)."""
    return next((c for c in RANGE_COVERAGES if str(c) == str(value)), 80)


def _form_level_error(answer: ApiAnswer) -> str:
    fields = answer.field_errors
    if fields and all(f in DEFAULTS for f in fields):
        if len(fields) == 1:
            return "The stone was not priced: 1 field needs a change (see below)."
        return f"The stone was not priced: {len(fields)} fields need a change (see below)."
    return answer.error_message or "The stone was not priced."


@bp.get("/requests")
@login_required
def my_requests() -> ResponseReturnValue:
    # The log also holds the comparable-stone lookups each pricing makes; asking for more
    # records than are shown leaves room to drop them and still fill the page.
    answer = call_api(lambda token: web().api.my_predictions(token, 2 * MY_REQUESTS_LIMIT))
    records = [r for r in _records(answer.body) if r.get("route", PREDICT_ROUTE) == PREDICT_ROUTE]
    rows = [_request_row(r) for r in records[:MY_REQUESTS_LIMIT]] if answer.ok else []
    error = None if answer.ok else (answer.error_message or f"the API answered {answer.status}")
    return render_template("requests.html", rows=rows, error=error)


def _records(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    for key in ("predictions", "items", "requests", "records"):
        value = body.get(key)
        if isinstance(value, list):
            return [r for r in value if isinstance(r, Mapping)]
    return []


def _request_row(record: Mapping[str, Any]) -> dict[str, Any]:
    response = record.get("response") if isinstance(record.get("response"), Mapping) else {}
    assert isinstance(response, Mapping)
    status = int(record.get("status") or 0)
    error = response.get("error")
    if 200 <= status < 300 and "price" in response:
        outcome = money(response.get("price"))
    elif 200 <= status < 300 and isinstance(response.get("predictions"), list):
        outcome = f"{len(response['predictions'])} prices"
    elif isinstance(error, Mapping):
        outcome = str(error.get("message", "not priced"))
    else:
        outcome = "not priced"
    return {
        "when": str(record.get("created_at", "")).replace("T", " ")[:19],
        "stone": stone_summary(record.get("request")),
        "outcome": outcome,
        "priced": 200 <= status < 300,
        "status": status,
        "model_version": record.get("model_version") or response.get("model_version") or "",
        "request_id": record.get("request_id") or response.get("request_id") or "",
    }


@bp.get("/model")
@login_required
def model() -> ResponseReturnValue:
    current = call_api(lambda token: web().api.current_model(token))
    card = call_api(lambda token: web().api.model_card(token))
    info = current.body if current.ok else {}
    card_html = None
    if card.ok and isinstance(card.body.get("markdown"), str):
        plot = card.body.get("plot_svg")
        plot_src = (
            "data:image/svg+xml;base64," + base64.b64encode(plot.encode()).decode()
            if isinstance(plot, str) and plot.lstrip().startswith("<svg")
            else None
        )
        card_html = render_markdown(
            card.body["markdown"], lambda name: plot_src if name == PLOT_FILE else None, heading_offset=2
        )
    return render_template(
        "model.html",
        info=info,
        error=None if current.ok else current.error_message,
        version=info.get("version") or info.get("model_version") or "",
        metrics=_holdout_metrics(info.get("metrics")),
        facts=_facts(info),
        card_html=card_html,
    )


@bp.get("/models")
@login_required
def models() -> ResponseReturnValue:
    answer = call_api(lambda token: web().api.model_history(token))
    listed = [m for m in answer.body.get("models", []) if isinstance(m, Mapping)] if answer.ok else []
    return render_template(
        "models.html",
        error=None if answer.ok else (answer.error_message or f"the API answered {answer.status}"),
        rows=history.rows(listed),
        plot=history.plot(listed),
        champion=answer.body.get("champion") if answer.ok else None,
    )


_METRIC_LABELS = {
    "mae": "Mean absolute error",
    "mape": "Mean absolute percentage error",
    "rmse": "Root mean squared error",
    "r2": "R² (share of price variance explained)",
    "n": "Held-out stones",
}


def _holdout_metrics(metrics: Any) -> list[tuple[str, str]]:
    if not isinstance(metrics, Mapping):
        return []
    inner = metrics.get("holdout")
    holdout: Mapping[str, Any] = inner if isinstance(inner, Mapping) else metrics
    rows = []
    for key, value in holdout.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        text = (
            money(value)
            if key in ("mae", "rmse")
            else f"{value:.2f} %"
            if key == "mape"
            else f"{value:.4f}"
            if key == "r2"
            else f"{value:,}"
            if isinstance(value, int)
            else f"{value:g}"
        )
        rows.append((_METRIC_LABELS.get(key, key), text))
    return rows


def _facts(info: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every other plain fact the API gives about the model, flattened one level."""
    facts = []
    for key, value in info.items():
        if key in ("version", "model_version", "metrics", "request_id"):
            continue
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                if isinstance(inner, str | int | float) and not isinstance(inner, bool):
                    facts.append(
                        (f"{key.replace('_', ' ')}: {sub.replace('_', ' ')}", shown_value("", inner))
                    )
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            facts.append((key.replace("_", " "), shown_value("", value)))
    return facts
