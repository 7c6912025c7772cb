"""The web page in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium),
on both halves: the AWS local stack (Cognito on moto) and the GCP one (Identity Platform's
sign-in through the Firebase Auth emulator, the one `api` Cloud Function behind the page).

A person signs in, prices a stone, reads the price, the reasons and the comparable stones,
fixes a bad value from the error beside its field, finds their requests (and nobody else's),
reads the model card and the history of every model, and signs out. Screenshots go to
tests/e2e/screenshots/ (git-ignored), named after the half.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("GEMCAST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(__file__).parent / "screenshots"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@dataclass(frozen=True)
class User:
    email: str
    password: str


@dataclass(frozen=True)
class Site:
    cloud: str
    url: str
    users: tuple[User, User]
    banner: str = ""  # what the stack printed for its user (the GCP half's is checked here)


def _add_user(aws_env: dict[str, str], pool_id: str, email: str) -> User:
    """A confirmed user in the local stack's (moto) user pool."""
    import boto3

    idp = boto3.client(
        "cognito-idp",
        endpoint_url=aws_env["AWS_ENDPOINT_URL"],
        region_name=aws_env["AWS_DEFAULT_REGION"],
        aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"],
    )
    password = "Gem-" + secrets.token_urlsafe(12) + "-9"
    idp.admin_create_user(
        UserPoolId=pool_id,
        Username=email,
        MessageAction="SUPPRESS",
        UserAttributes=[{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}],
    )
    idp.admin_set_user_password(UserPoolId=pool_id, Username=email, Password=password, Permanent=True)
    return User(email, password)


@pytest.fixture(scope="session", params=["aws", "gcp"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A local stack with a quick linear model, its web page, the demo user and a second one:
    aws, `make demo`'s runner (Cognito on moto); gcp, `make demo-gcp`'s (Firebase Auth emulator)."""
    from gemcast_local.servers import free_port

    if request.param == "gcp":
        from gemcast_local.gcp_stack import GcpStack

        work = tmp_path_factory.mktemp("webapp-gcp-stack")
        # The session's one Firebase Auth emulator (tests/shared/fixtures.py), not one more.
        identity = request.getfixturevalue("firebase_auth")
        with GcpStack(workdir=work, kind="linear", train_budget_s=5, trials=1, identity=identity) as gcp:
            assert gcp.webapp is not None
            second = User(f"second-{secrets.token_hex(4)}@example.com", "Gem-" + secrets.token_urlsafe(12) + "-9")
            identity.sign_up(second.email, second.password)
            yield Site("gcp", gcp.webapp.url, (User(gcp.demo_email, gcp.demo_password), second), gcp.banner())
        return
    from gemcast_local.stack import LocalStack, StackConfig

    state = tmp_path_factory.mktemp("webapp-stack") / ".gemcast"
    config = StackConfig(state_dir=state, kind="linear", serve_workers=1, api_port=free_port(),
                         serve_port=free_port(), web_port=free_port())
    with LocalStack(config, say=lambda _msg: None) as stack:
        assert stack.webapp is not None, "the local stack serves the web app"
        demo = User(stack.config.demo_email, stack.config.demo_password)
        yield Site("aws", stack.webapp.url,
                   (demo, _add_user(stack.aws_env, stack.user_pool_id, "second@example.com")))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/install-browser.sh (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    SHOTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Any]:
    contexts = []

    def make(viewport: dict[str, int] = DESKTOP) -> Any:
        context = browser.new_context(viewport=viewport)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


def shot(page: Any, name: str, site: Site) -> None:
    page.screenshot(path=str(SHOTS / f"{site.cloud}-{name}.png"), full_page=True)


def sign_in(page: Any, site: Site, user: User) -> None:
    """With the keyboard only: type, Tab, type, Enter."""
    page.goto(site.url + "/signin")
    page.get_by_label("Email").fill(user.email)
    page.keyboard.press("Tab")
    page.keyboard.type(user.password)
    page.keyboard.press("Enter")
    try:
        # Signing in waits on the identity stand-in (Cognito on moto, or the Firebase Auth
        # emulator, a Node process); on a loaded 2-core machine it can outlast one action.
        page.wait_for_url(re.compile(r".*/price$"), timeout=45_000)
    except Exception as exc:
        raise AssertionError(f"sign-in did not reach /price: at {page.url}, page says "
                             f"{page.locator('body').inner_text()[:500]!r}") from exc


def price_a_stone(page: Any, **values: str) -> None:
    for name, value in values.items():
        page.locator(f"#{name}").fill(value)
    page.get_by_role("button", name="Price this stone").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")


def test_signed_out_every_page_leads_to_sign_in(site: Site, new_page: Any) -> None:
    page = new_page()
    for path in ("/price", "/requests", "/model", "/models", "/"):
        page.goto(site.url + path)
        assert re.search(r"/signin(\?|$)", page.url), (path, page.url)
    assert page.get_by_role("heading", name="Sign in").is_visible()
    page.get_by_label("Email").fill(site.users[0].email)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Incorrect email or password."
    shot(page, "01-sign-in-refused", site)


def test_sign_in_price_a_stone_and_read_why(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.users[0])
    # The form opens on a typical stone, grades best first with their meaning.
    assert page.locator("#carat").input_value() == "0.7"
    assert page.locator("#color option").first.inner_text() == "D: colorless, the best grade"
    assert page.locator("#clarity option").first.inner_text() == "IF: internally flawless, the best grade"
    shot(page, "02-price-form", site)
    price_a_stone(page)
    price = page.locator("#price").inner_text()
    assert re.fullmatch(r"\$\d{1,3}(,\d{3})*", price), price
    assert page.locator("#model-version").inner_text().strip()
    # The range around the price, at the default 80 %.
    low = _dollars(page.locator("#range-low").inner_text())
    high = _dollars(page.locator("#range-high").inner_text())
    assert low < _dollars(price) < high
    assert "80 % of stones" in page.locator("#price-range").inner_text()
    # The reasons as a buyer reads them: five groups, each with what it means.
    groups = page.locator("#reason-groups tbody tr")
    assert [groups.nth(i).locator("th").inner_text().split("\n")[0] for i in range(groups.count())] == [
        "Size", "Color", "Clarity", "Cut", "Proportions"]
    assert "E: colorless" in page.locator("#reason-groups").inner_text()
    assert re.search(r"[+−]\$[\d,]+", groups.first.locator(".effect").inner_text())
    # The per-input values behind them, in the details fold.
    page.locator("#reason-details summary").click()
    reasons = page.locator("#reasons tbody tr")
    assert reasons.count() >= 9
    assert re.search(r"[+−]\$[\d,]+", reasons.first.locator(".effect").inner_text())
    # What if: the neighbouring grades and the next carat milestone (0.7 ct is just under 0.75).
    what_if = page.locator("#what-if").inner_text()
    assert "Color one grade up" in what_if and "E → D" in what_if
    assert "0.75 ct" in what_if
    comparables = page.locator("#similar tbody tr")
    assert comparables.count() >= 1
    assert "Ideal" in comparables.first.inner_text() and "$" in comparables.first.inner_text()
    shot(page, "03-priced-desktop", site)


def _dollars(text: str) -> int:
    return int(text.strip().lstrip("$").replace(",", ""))


def test_the_answer_reads_on_a_phone(site: Site, new_page: Any) -> None:
    page = new_page(PHONE)
    sign_in(page, site, site.users[0])
    price_a_stone(page, carat="1.01", x="6.4", y="6.43", z="3.97")
    assert page.locator("#price").is_visible()
    # Nothing wider than the screen but the tables, which scroll inside their own frame.
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    shot(page, "04-priced-phone", site)


def test_a_bad_value_shows_the_error_beside_its_field(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.users[0])
    price_a_stone(page, carat="9")
    error = page.locator("#carat-error")
    assert "must be at most 6 ct, got 9" in error.inner_text()
    assert page.locator("#carat").get_attribute("aria-invalid") == "true"
    assert page.locator("#carat").input_value() == "9"
    assert page.locator("#price").count() == 0
    shot(page, "05-field-error", site)


def test_one_user_cannot_see_anothers_requests(site: Site, new_page: Any) -> None:
    ada, bob = site.users
    ada_page, bob_page = new_page(), new_page()
    sign_in(ada_page, site, ada)
    price_a_stone(ada_page, carat="0.53", x="5.2", y="5.23", z="3.2")
    ada_page.get_by_role("link", name="My requests").click()
    assert "0.53 ct Ideal E VS1" in ada_page.locator("#my-requests").inner_text()
    shot(ada_page, "06-my-requests", site)
    sign_in(bob_page, site, bob)
    bob_page.get_by_role("link", name="My requests").click()
    assert "0.53 ct" not in bob_page.locator("main").inner_text()
    shot(bob_page, "07-other-users-requests", site)


def test_model_page_shows_the_model_in_service(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.users[0])
    page.get_by_role("link", name="Model", exact=True).click()
    assert page.locator("#current-version").inner_text().strip()
    assert page.locator("#metrics").is_visible()
    shot(page, "08-model", site)


def test_models_page_shows_every_version_with_the_champion_marked(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.users[0])
    page.get_by_role("link", name="Models", exact=True).click()
    rows = page.locator("#model-history tbody tr")
    assert rows.count() >= 1
    champion = page.locator("#model-history tr.champion")
    assert champion.count() == 1 and "champion" in champion.inner_text()
    assert page.locator("#champion-version").inner_text() in champion.inner_text()
    assert page.get_by_role("img", name="Held-out error of every model version").is_visible()
    assert page.locator("#history-plot rect").count() == 2 * rows.count()
    shot(page, "09-models", site)


def test_sign_out_ends_the_session(site: Site, new_page: Any) -> None:
    page = new_page()
    sign_in(page, site, site.users[0])
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/signin$"))
    assert page.get_by_role("status").first.inner_text() == "You are signed out."
    page.goto(site.url + "/requests")
    assert "/signin" in page.url


@pytest.mark.parametrize("site", ["gcp"], indirect=True)  # the AWS stack's: tests/e2e/test_local_stack.py
def test_every_command_the_gcp_stack_prints_works_as_printed(site: Site) -> None:
    """`make demo-gcp`'s banner: the token line, then each curl line, run by bash as a user would."""
    import json
    import subprocess
    lines = [line.strip() for line in site.banner.splitlines() if line.strip().startswith(("TOKEN=", "curl "))]
    token_line, *curls = lines
    assert len(curls) == 4
    script = "set -euo pipefail\n" + token_line + "\n" + "".join(f"{c}\necho\n" for c in curls)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120, check=True).stdout
    priced, similar, mine, models = (json.loads(line) for line in out.splitlines() if line.strip())
    assert priced["price"] > 0 and priced["reasons"]
    assert similar["count"] == 3
    assert [r["route"] for r in mine["predictions"]][:2] == ["GET /v1/diamonds/similar", "POST /v1/predictions"]
    assert models["champion"] == models["models"][0]["version"]
