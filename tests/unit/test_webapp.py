"""The web app through Flask's test client, against a small stand-in of the gemcast API.

The stand-in (``StubApi``) plays only the gemcast HTTP API on 127.0.0.1, with the response
shapes of layers/gemcast/gemcast/api.py and inventory.py; sign-in is a fake authenticator
object. The real API, Cognito and a real browser are exercised in tests/e2e.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "webapp"))

from gemcast_web import create_app  # noqa: E402
from gemcast_web.auth import CognitoAuth, SignInError, Tokens, WrongPasswordError, tokens_from  # noqa: E402
from gemcast_web.markdown import render  # noqa: E402
from gemcast_web.settings import WebConfigError, WebSettings  # noqa: E402
from gemcast_web.stones import DEFAULTS  # noqa: E402

from gemcast.schema import check_stone  # noqa: E402

GOOD = dict(DEFAULTS)
PLOT = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10"><circle cx="5" cy="5" r="2"/></svg>'


def fake_token(sub: str, email: str, exp: float | None = None) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return (
        f"{part({'alg': 'none'})}.{part({'sub': sub, 'email': email, 'exp': exp or time.time() + 3600})}.sig"
    )


class StubApi:
    """The gemcast API's routes and shapes, in memory; the caller is the token's ``sub``."""

    def __init__(self) -> None:
        self.log: list[dict[str, Any]] = []
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []
        self.refused_tokens: set[str] = set()
        self.down = False
        self.card = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _caller(self) -> str | None:
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ")
                if not auth.startswith("Bearer ") or token in outer.refused_tokens:
                    return None
                payload = token.split(".")[1]
                return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                outer.calls.append((method, url.path, dict(self.headers), body))
                caller = self._caller()
                if caller is None:
                    return self._send(401, {"message": "Unauthorized"})
                if outer.down:
                    return self._send(
                        503, {"error": {"message": "the model endpoint is unavailable; try again shortly"}}
                    )
                self._send(*outer.answer(method, url.path, query, body, caller))

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def answer(
        self, method: str, path: str, query: dict[str, str], body: Any, caller: str
    ) -> tuple[int, Any]:
        if (method, path) == ("POST", "/v1/predictions"):
            rid = f"req-{len(self.log) + 1}"
            values, problems = check_stone(body)
            if problems:
                fields = {p.field: p.reason for p in problems}
                out: tuple[int, Any] = (
                    400,
                    {"error": {"message": "invalid stone", "fields": fields}, "request_id": rid},
                )
            else:
                out = (
                    200,
                    {
                        "request_id": rid,
                        "model_version": "20240101T000000Z-abc123",
                        "price": 2934.5,
                        "base_price": 3932.0,
                        "reasons": [
                            {"feature": "carat", "value": 0.7, "effect_pct": -41.2, "effect_usd": -1860.0},
                            {"feature": "clarity", "value": "VS1", "effect_pct": 14.0, "effect_usd": 512.3},
                            {"feature": "color", "value": "E", "effect_pct": 9.1, "effect_usd": 350.2},
                        ],
                    },
                )
            self.log.append(
                {
                    "caller": caller,
                    "request_id": rid,
                    "route": "POST /v1/predictions",
                    "created_at": "2024-05-01T10:00:00.000Z",
                    "request": body,
                    "response": out[1],
                    "status": out[0],
                    "model_version": out[1].get("model_version", ""),
                }
            )
            return out
        if (method, path) == ("GET", "/v1/diamonds/similar"):
            stones = [
                {
                    "stone_id": f"s{i}",
                    "carat": 0.7 + i / 100,
                    "cut": query["cut"],
                    "color": query["color"],
                    "clarity": query["clarity"],
                    "depth": 61.5,
                    "table": 56.0,
                    "x": 5.71,
                    "y": 5.74,
                    "z": 3.52,
                    "price": 2800 + 10 * i,
                }
                for i in range(int(query["n"]))
            ]
            self.log.append(
                {
                    "caller": caller,
                    "request_id": f"sim-{len(self.log) + 1}",
                    "route": "GET /v1/diamonds/similar",
                    "created_at": "2024-05-01T10:00:01.000Z",
                    "request": {"query": query, "body": None},
                    "response": {"count": len(stones)},
                    "status": 200,
                    "model_version": "",
                }
            )
            return 200, {"query": {**query, "n": int(query["n"])}, "count": len(stones), "stones": stones}
        if (method, path) == ("GET", "/v1/predictions/mine"):
            mine = [{k: v for k, v in r.items() if k != "caller"} for r in self.log if r["caller"] == caller]
            mine = mine[::-1][: int(query.get("limit", 20))]
            return 200, {"count": len(mine), "predictions": mine}
        if (method, path) == ("GET", "/v1/models/current"):
            return 200, {
                "version": "20240101T000000Z-abc123",
                "created": "2024-01-01T00:00:00Z",
                "metrics": {"holdout": {"mae": 270.1, "mape": 7.41, "rmse": 540.2, "r2": 0.9811, "n": 10788}},
                "data": {"snapshot_id": "snap-1", "train_rows": 43152},
            }
        if (method, path) == ("GET", "/v1/models"):
            return 200, {"count": 2, "champion": "20240101T000000Z-abc123", "models": [
                {"version": "20240201T000000Z-def456", "created": "2024-02-01T00:00:00Z", "kind": "gbm",
                 "metrics": {"mae": 281.5, "mape": 7.9}, "champion": False,
                 "trained_on": {"snapshot_id": "snap-2", "accepted": 5100, "train_rows": 4080, "holdout_rows": 1020},
                 "gate": {"promote": False, "metric": "mae", "reason": "mae 281.5 does not beat the champion's 270.1"}},
                {"version": "20240101T000000Z-abc123", "created": "2024-01-01T00:00:00Z", "kind": "gbm",
                 "metrics": {"mae": 270.1, "mape": 7.41}, "champion": True,
                 "trained_on": {"snapshot_id": "snap-1", "accepted": 4983, "train_rows": 3986, "holdout_rows": 997},
                 "gate": {"promote": True, "metric": "mae", "reason": "no champion yet"}},
            ]}
        if (method, path) == ("GET", "/v1/models/current/card") and self.card:
            return 200, {
                "version": "20240101T000000Z-abc123",
                "plot_svg": PLOT,
                "markdown": "# gemcast model v1\n\nA <b>model</b> with `code`.\n\n"
                "| metric | value |\n|---|---|\n| MAE (USD) | 270.1 |\n\n"
                "![Predicted against actual price](pred_vs_actual.svg)\n",
            }
        return 404, {"message": "Not Found"}

    def __enter__(self) -> StubApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeAuth:
    """Two users; tokens the stub API reads. ``refresh`` can be made to fail."""

    users = {"ada@example.com": ("pw-ada-1", "sub-ada"), "bob@example.com": ("pw-bob-1", "sub-bob")}

    def __init__(self) -> None:
        self.refresh_fails = False
        self.refreshed = 0
        self.signed_out: list[str] = []

    def sign_in(self, email: str, password: str) -> Tokens:
        if self.users.get(email, ("",))[0] != password:
            raise WrongPasswordError()
        sub = self.users[email][1]
        return tokens_from(fake_token(sub, email), f"refresh-{sub}")

    def refresh(self, tokens: Tokens) -> Tokens:
        if self.refresh_fails:
            raise SignInError("Your session has expired. Please sign in again.")
        self.refreshed += 1
        return tokens_from(
            fake_token(tokens.subject, tokens.email) + str(self.refreshed), tokens.refresh_token
        )

    def sign_out(self, tokens: Tokens) -> None:
        self.signed_out.append(tokens.email)


@pytest.fixture
def stub():
    with StubApi() as api:
        yield api


@pytest.fixture
def auth() -> FakeAuth:
    return FakeAuth()


@pytest.fixture
def app(stub: StubApi, auth: FakeAuth):
    settings = WebSettings(
        api_url=stub.url,
        user_pool_id="pool",
        user_pool_client_id="client",
        secret_key="test-secret",
        api_timeout_s=5,
    )
    return create_app(settings, auth=auth)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


def sign_in(client: Any, email: str = "ada@example.com", password: str = "pw-ada-1", **extra: str) -> Any:
    page = client.get("/signin").get_data(as_text=True)
    return client.post(
        "/signin", data={"csrf_token": csrf_of(page), "email": email, "password": password, **extra}
    )


def price(client: Any, **changes: str) -> Any:
    page = client.get("/price").get_data(as_text=True)
    return client.post("/price", data={"csrf_token": csrf_of(page), **GOOD, **changes})


# -- settings ----------------------------------------------------------------------------------


def test_settings_name_every_missing_variable_at_once():
    with pytest.raises(WebConfigError) as caught:
        WebSettings.from_env({})
    message = str(caught.value)
    assert "API_URL" in message and "USER_POOL_ID" in message and "USER_POOL_CLIENT_ID" in message


def test_settings_read_from_the_environment_with_typed_values():
    settings = WebSettings.from_env(
        {
            "API_URL": "https://api.example.com/dev/",
            "USER_POOL_ID": "p",
            "USER_POOL_CLIENT_ID": "c",
            "AWS_REGION": "eu-west-1",
            "SESSION_IDLE_MINUTES": "30",
        }
    )
    assert settings.api_url == "https://api.example.com/dev"
    assert settings.region == "eu-west-1" and settings.session_idle_minutes == 30
    assert settings.secret_key  # made at start when not given
    with pytest.raises(WebConfigError, match="SESSION_IDLE_MINUTES"):
        WebSettings.from_env(
            {
                "API_URL": "http://x",
                "USER_POOL_ID": "p",
                "USER_POOL_CLIENT_ID": "c",
                "SESSION_IDLE_MINUTES": "soon",
            }
        )


# -- signing in and out ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/price", "/requests", "/model"])
def test_signed_out_pages_redirect_to_sign_in(app, path):
    response = app.test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == f"/signin?next={path}"


def test_wrong_password_is_refused_without_saying_who_exists(app):
    client = app.test_client()
    response = sign_in(client, password="nope")
    assert response.status_code == 401
    assert "Incorrect email or password." in response.get_data(as_text=True)
    assert client.get("/price").status_code == 302


def test_sign_in_sets_a_new_httponly_samesite_cookie_and_returns_to_the_page_asked(app):
    client = app.test_client()
    client.get("/requests")
    before = client.get_cookie("gemcast_session").value
    response = sign_in(client, next="/requests")
    assert response.status_code == 302 and response.headers["Location"] == "/requests"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get_cookie("gemcast_session").value != before  # no session fixation
    assert client.get("/requests").status_code == 200


def test_cookie_is_secure_behind_https(app):
    client = app.test_client()
    response = client.get("/signin", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in response.headers["Set-Cookie"]


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "/\t/evil.example",  # browsers drop tabs and newlines anywhere: "//evil.example"
        "/\n/evil.example",
        "/\r\n/evil.example",
        " //evil.example",  # and strip leading spaces and control characters
        "\x00//evil.example",
        "\x1f/evil.example",
        "/\\evil.example",  # and read a backslash as a slash
        "\\\\evil.example",
        "/\\/evil.example",
        "https://evil.example/",
        "HTTPS:evil.example",
        "javascript:alert(1)",
        "data:text/html,hi",
        "evil.example",
        "///evil.example",
    ],
)
def test_next_never_leads_off_the_site(app, target):
    client = app.test_client()
    response = sign_in(client, next=target)
    assert response.status_code == 302 and response.headers["Location"] == "/price"
    # Signed in already, the sign-in page redirects to next at once: the same check holds.
    assert client.get("/signin", query_string={"next": target}).headers["Location"] == "/price"


@pytest.mark.parametrize("target", ["/requests", "/price?carat=1.2", "/model#card", "/%2F%2Fevil.example"])
def test_next_keeps_a_path_of_this_site(app, target):
    assert sign_in(app.test_client(), next=target).headers["Location"] == target


def test_no_number_of_new_sessions_signs_anyone_out(app):
    ada = app.test_client()
    sign_in(ada)
    sessions = app.extensions["gemcast_web"].sessions
    for _ in range(2_000):  # visitors who never sign in cost the server nothing
        assert app.test_client().get("/signin").status_code == 200
    assert len(sessions) == 1
    bob = app.test_client()
    for _ in range(sessions.max_per_user + 3):  # one account signing in again and again
        sign_in(app.test_client(), email="bob@example.com", password="pw-bob-1")
    sign_in(bob, email="bob@example.com", password="pw-bob-1")
    assert len(sessions) == 1 + sessions.max_per_user  # only bob's oldest were dropped
    assert ada.get("/price").status_code == 200 and bob.get("/price").status_code == 200


def test_an_anonymous_session_cookie_cannot_be_forged(app):
    client = app.test_client()
    client.set_cookie("gemcast_session", "eyJhIjoieCIsImYiOltdfQ.forged.sig")
    page = client.get("/signin")
    assert page.status_code == 200
    assert client.post("/signin", data={"csrf_token": "x", "email": "a", "password": "b"}).status_code == 400


def test_wrong_passwords_are_throttled_per_account_with_a_clear_message(app):
    client = app.test_client()
    for _ in range(5):
        assert sign_in(client, password="nope").status_code == 401
    refused = sign_in(client)  # even the right password waits out the window
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Too many wrong passwords for this account. Wait 15 minutes" in refused.get_data(as_text=True)
    assert sign_in(app.test_client(), email="bob@example.com", password="pw-bob-1").status_code == 302
    throttle = app.extensions["gemcast_web"].throttle
    later = time.monotonic() + 15 * 60 + 1
    throttle.clock = lambda: later
    assert sign_in(client).status_code == 302


def test_the_right_password_clears_the_accounts_count(app):
    client = app.test_client()
    for _ in range(4):
        sign_in(client, password="nope")
    assert sign_in(client).status_code == 302
    other = app.test_client()
    for _ in range(4):
        assert sign_in(other, password="nope").status_code == 401


def test_wrong_passwords_are_throttled_per_address(app):
    def attempt(email: str, address: str) -> Any:
        client = app.test_client()
        page = client.get("/signin", environ_base={"REMOTE_ADDR": address}).get_data(as_text=True)
        return client.post("/signin", environ_base={"REMOTE_ADDR": address},
                           data={"csrf_token": csrf_of(page), "email": email, "password": "nope"})

    for n in range(20):
        assert attempt(f"guess{n}@example.com", "203.0.113.7").status_code == 401
    refused = attempt("ada@example.com", "203.0.113.7")
    assert refused.status_code == 429 and "your network address" in refused.get_data(as_text=True)
    assert attempt("ada@example.com", "198.51.100.1").status_code == 401  # another address is not held


def test_sign_out_ends_the_session_even_with_the_old_cookie(app, auth):
    client = app.test_client()
    sign_in(client)
    old = client.get_cookie("gemcast_session").value
    page = client.get("/price").get_data(as_text=True)
    response = client.post("/signout", data={"csrf_token": csrf_of(page)})
    assert response.headers["Location"] == "/signin"
    assert auth.signed_out == ["ada@example.com"]
    assert "You are signed out." in client.get("/signin").get_data(as_text=True)
    replay = app.test_client()
    replay.set_cookie("gemcast_session", old)
    assert replay.get("/price").status_code == 302


def test_a_form_without_the_csrf_token_is_refused_and_nothing_is_priced(app, stub):
    client = app.test_client()
    sign_in(client)
    response = client.post("/price", data=GOOD)
    assert response.status_code == 400
    assert not [c for c in stub.calls if c[1] == "/v1/predictions"]
    assert client.post("/signout", data={"csrf_token": "forged"}).status_code == 400


# -- the price form ----------------------------------------------------------------------------


def test_form_has_a_label_for_every_field_defaults_and_grades_best_first(app):
    client = app.test_client()
    sign_in(client)
    html = client.get("/price").get_data(as_text=True)
    for name in GOOD:
        assert f'<label for="{name}">' in html
        assert f'id="{name}" name="{name}"' in html
    assert 'value="0.7"' in html and 'value="61.8"' in html
    colors = re.findall(r'<option value="([A-Z])"', html)
    assert colors == ["D", "E", "F", "G", "H", "I", "J"]
    assert "D: colorless, the best grade" in html and "IF: internally flawless, the best grade" in html
    assert re.search(r'<option value="Ideal" selected>Ideal: the best cut grade</option>', html)


def test_pricing_shows_price_version_reasons_and_comparables(app, stub):
    client = app.test_client()
    sign_in(client)
    response = price(client)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<p class="price" id="price">$2,934</p>' in html  # 2934.5 rounds half to even
    assert "20240101T000000Z-abc123" in html
    assert "−$1,860" in html and "+$512" in html and "−41.2 %" in html
    assert html.count('class="bar-down"') == 1 and html.count('class="bar-up"') == 2
    assert html.count('<td class="num">$2,8') == 5  # five comparable stones, with prices
    method, path, headers, body = next(c for c in stub.calls if c[1] == "/v1/predictions")
    assert headers["Authorization"].startswith("Bearer ")
    assert body["carat"] == 0.7 and body["cut"] == "Ideal"  # numbers sent as numbers
    similar = next(c for c in stub.calls if c[1] == "/v1/diamonds/similar")
    assert similar[2]["Authorization"] == headers["Authorization"]


def test_a_bad_value_shows_the_api_reason_beside_its_field_and_keeps_the_input(app):
    client = app.test_client()
    sign_in(client)
    response = price(client, carat="9", table="wide")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    carat = re.search(r'<p class="field-error" id="carat-error">(.*?)</p>', html)
    assert carat and "must be at most 6 ct, got 9" in carat.group(1)
    assert "must be a number, got &#39;wide&#39;" in html
    assert re.search(
        r'id="carat" name="carat"[^>]*value="9"[^>]*aria-describedby="carat-hint carat-error"'
        r'[^>]*aria-invalid="true"',
        html,
    )
    assert 'id="price"' not in html


def test_the_api_being_down_is_said_plainly(app, stub):
    client = app.test_client()
    sign_in(client)
    stub.down = True
    response = price(client)
    assert response.status_code == 503
    assert "the model endpoint is unavailable" in response.get_data(as_text=True)


def test_a_refused_token_is_refreshed_once_then_the_call_succeeds(app, stub, auth):
    client = app.test_client()
    sign_in(client)
    client.get("/requests")
    first = stub.calls[-1][2]["Authorization"]
    stub.refused_tokens = {first.removeprefix("Bearer ")}
    response = client.get("/requests")
    assert response.status_code == 200 and auth.refreshed == 1
    assert stub.calls[-1][2]["Authorization"] != first


def test_when_refresh_fails_the_user_is_sent_to_sign_in_with_the_reason(app, stub, auth):
    client = app.test_client()
    sign_in(client)
    client.get("/requests")
    stub.refused_tokens = {c[2]["Authorization"].removeprefix("Bearer ") for c in stub.calls}
    auth.refresh_fails = True
    response = client.get("/requests")
    assert response.status_code == 302 and response.headers["Location"].startswith("/signin")
    assert "Your session has expired" in client.get("/signin").get_data(as_text=True)
    assert client.get("/price").status_code == 302


# -- my requests and the model -----------------------------------------------------------------


def test_my_requests_lists_only_the_signed_in_users_requests(app):
    ada, bob = app.test_client(), app.test_client()
    sign_in(ada)
    sign_in(bob, "bob@example.com", "pw-bob-1")
    price(ada)
    price(ada, carat="9")
    ada_page = ada.get("/requests").get_data(as_text=True)
    assert ada_page.count("0.7 ct Ideal E VS1") == 1 and "9 ct Ideal E VS1" in ada_page
    assert "$2,934" in ada_page and "invalid stone" in ada_page
    assert "sim-" not in ada_page  # the comparable-stone lookups of each pricing are left out
    bob_page = bob.get("/requests").get_data(as_text=True)
    assert "Ideal E VS1" not in bob_page and "You have no requests yet" in bob_page


def test_model_page_shows_version_metrics_and_the_card_with_its_plot(app):
    client = app.test_client()
    sign_in(client)
    html = client.get("/model").get_data(as_text=True)
    assert "<code>20240101T000000Z-abc123</code>" in html
    assert "$270" in html and "7.41 %" in html and "0.9811" in html and "10,788" in html
    assert "<h3>gemcast model v1</h3>" in html
    assert "A &lt;b&gt;model&lt;/b&gt; with <code>code</code>." in html  # card text is never raw HTML
    expected = base64.b64encode(PLOT.encode()).decode()
    assert f'<img src="data:image/svg+xml;base64,{expected}"' in html


def test_model_page_without_a_card_route_still_shows_the_model(app, stub):
    stub.card = False
    client = app.test_client()
    sign_in(client)
    html = client.get("/model").get_data(as_text=True)
    assert "20240101T000000Z-abc123" in html and "does not publish this model" in html


def test_models_page_lists_every_version_and_plots_mae_and_mape_with_the_champion_marked(app):
    client = app.test_client()
    sign_in(client)
    html = client.get("/models").get_data(as_text=True)
    table = html[html.index('id="model-history"'):]
    assert table.index("20240201T000000Z-def456") < table.index("20240101T000000Z-abc123")  # newest first
    assert "$282" in table and "7.90 %" in table and "4,983 / 3,986 / 997" in table
    assert "does not beat the champion" in table and 'class="champion"' in table
    plot = html[html.index("<svg"):html.index("</svg>")]
    assert plot.count("<rect") == 4  # MAE and MAPE, two versions each
    assert "$270 ★" in plot and "7.41 % ★" in plot and "$282 ★" not in plot
    assert plot.index("abc123") < plot.index("def456")  # a history reads oldest to newest


def test_identity_platform_sign_in_goes_to_the_emulator_when_one_is_set():
    from gemcast_web.auth import IdentityPlatformAuth

    cloud = IdentityPlatformAuth("key")
    local = IdentityPlatformAuth("key", emulator_host="127.0.0.1:9099")

    assert cloud.sign_in_url == "https://identitytoolkit.googleapis.com/v1/accounts:signInWithPassword"
    assert local.sign_in_url == "http://127.0.0.1:9099/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword"
    assert local.refresh_url == "http://127.0.0.1:9099/securetoken.googleapis.com/v1/token"


def test_pages_load_nothing_from_other_sites_and_forbid_scripts(app):
    client = app.test_client()
    sign_in(client)
    for path in ("/signin", "/price", "/requests", "/model", "/models"):
        response = client.get(path)
        html = response.get_data(as_text=True)
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert url.startswith(("/", "#", "data:image/svg+xml")), (path, url)
        assert "<script" not in html
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
    assert client.get("/static/gemcast.css").status_code == 200


def test_markdown_renders_the_card_shapes_and_escapes_everything():
    html = render(
        "## Data\n- rows: 10\n  more\n- `x` <i>\n\nplain **bold** & <script>\n\n![a](p.svg)\n![b](q.svg)",
        lambda name: "/plot" if name == "p.svg" else None,
        heading_offset=2,
    )
    assert "<h4>Data</h4>" in html
    assert "<li>rows: 10 more</li><li><code>x</code> &lt;i&gt;</li>" in html
    assert "<p>plain <strong>bold</strong> &amp; &lt;script&gt;</p>" in html
    assert '<img src="/plot" alt="a">' in html and 'alt="b"' not in html


# -- Cognito sign-in, against moto's in-process Cognito (no network) --------------------------


def test_cognito_sign_in_gives_the_users_id_token_and_hides_who_exists(monkeypatch):
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with moto.mock_aws():
        idp = boto3.client("cognito-idp", region_name="us-east-1")
        pool = idp.create_user_pool(PoolName="p")["UserPool"]["Id"]
        client_id = idp.create_user_pool_client(
            UserPoolId=pool,
            ClientName="web",
            ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )["UserPoolClient"]["ClientId"]
        idp.admin_create_user(
            UserPoolId=pool,
            Username="ada@example.com",
            UserAttributes=[{"Name": "email", "Value": "ada@example.com"}],
        )
        idp.admin_set_user_password(
            UserPoolId=pool, Username="ada@example.com", Password="Secret-pass-1", Permanent=True
        )
        cognito = CognitoAuth(client_id, "us-east-1", client=idp)
        tokens = cognito.sign_in("ada@example.com", "Secret-pass-1")
        assert tokens.email == "ada@example.com" and tokens.subject and tokens.expires_at > time.time()
        assert tokens.id_token.count(".") == 2 and tokens.refresh_token
        refreshed = cognito.refresh(tokens)
        assert refreshed.subject == tokens.subject and refreshed.refresh_token == tokens.refresh_token
        for email, password in (("ada@example.com", "wrong"), ("nobody@example.com", "Secret-pass-1")):
            with pytest.raises(SignInError, match="^Incorrect email or password.$"):
                cognito.sign_in(email, password)


def test_a_signed_in_session_lasts_while_it_is_used_and_ends_when_idle(app, monkeypatch):
    client = app.test_client()
    sign_in(client)
    now = time.time()
    for hours in (1, 2, 3):  # used every hour for three hours, past the 2-hour idle time
        monkeypatch.setattr(time, "time", lambda hours=hours: now + hours * 3600)
        assert client.get("/price").status_code == 200
    monkeypatch.setattr(time, "time", lambda: now + 3 * 3600 + 121 * 60)
    assert client.get("/price").status_code == 302
