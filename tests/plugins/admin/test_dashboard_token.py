"""The dashboard's ``#token=`` link, in headless Chromium against the real admin app: it signs
in a tab that has no token, and never replaces the token of a tab already signed in (issue 16:
a link could log a victim into the attacker's tenant, whose data the victim would then take for
their own, or feed it). The harness is ``_dashboard.py``, as for ``test_dashboard.py``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatch_plugins.admin.auth import Token

HERE = Path(__file__).parent
CHROMIUM = os.environ.get("DISPATCH_TEST_CHROMIUM", "/usr/bin/chromium")
#: Generous: a loaded 2-core machine runs the browser, the server and the worker at once.
TIMEOUT_MS = 20_000
TOKEN_KEY = "dispatch.token"
NOTICE = '[data-notice="token-ignored"]'

try:
    from playwright.sync_api import Browser, Error as PlaywrightError, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the browser fixture reports it
    sync_playwright = None  # type: ignore[assignment]


def _unavailable(what: str) -> None:
    """Skip because ``what`` is missing, or fail when CI requires it (as test_dashboard.py)."""
    if os.environ.get("DISPATCH_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required in CI (DISPATCH_TEST_REQUIRE_SERVICES=1) but unavailable")
    pytest.skip(f"{what} unavailable")


def _helpers() -> Any:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module("_dashboard")


dash = _helpers()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        _unavailable("Playwright for Python")
    if not Path(CHROMIUM).exists():
        _unavailable(f"Chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=dash.CHROMIUM_ARGS
            )
        except PlaywrightError as exc:
            _unavailable(f"Chromium at {CHROMIUM} ({str(exc).splitlines()[0]})")
        expect.set_options(timeout=TIMEOUT_MS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[Any]:
    """The admin app with an operator token and a tenant token (no seeded data needed)."""
    base = tmp_path_factory.mktemp("dashboard-token")
    flags = base / "flags"
    flags.mkdir()
    tokens = [
        Token(name="ops", secret=dash.OPERATOR_SECRET, scopes=frozenset({"admin"})),
        Token(name="acme", secret=dash.TENANT_SECRET, scopes=frozenset({"read"}), tenant="acme"),
    ]
    server = dash.LiveDispatch(dash.build_engine(base / "dispatch.db", flags), tokens)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (own session storage); an uncaught script error fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id="UTC")
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _stored(page: Page) -> Any:
    return page.evaluate(f"sessionStorage.getItem({TOKEN_KEY!r})")


def _sign_in_with_the_form(page: Page, live: Any, secret: str) -> None:
    page.goto(live.url)
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-token", secret)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#shell")).to_be_visible()


def _shows_operator_data(page: Page, live: Any) -> None:
    """The Workers page, for operator tokens only, lists the live worker: the tab's requests
    carry the operator's token."""
    [worker] = live.call(live.engine.aworkers())
    page.goto(f"{live.url}#/workers")
    expect(page.locator(f'tr[data-worker="{worker.id}"]')).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("needs an operator token")


def test_a_link_signs_in_a_tab_that_has_no_token(page: Page, live: Any) -> None:
    page.goto(f"{live.url}#token={dash.TENANT_SECRET}")
    expect(page.locator("#shell")).to_be_visible()
    assert "token=" not in page.url
    assert _stored(page) == dash.TENANT_SECRET
    expect(page.locator(NOTICE)).to_have_count(0)


def test_a_link_does_not_replace_the_token_of_a_signed_in_tab(page: Page, live: Any) -> None:
    _sign_in_with_the_form(page, live, dash.OPERATOR_SECRET)
    # The attacker's link, opened in the same tab: only the fragment changes (hashchange).
    page.goto(f"{live.url}#token={dash.TENANT_SECRET}")
    notice = page.locator(NOTICE)
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("ignored")
    expect(notice).to_contain_text("sign out first")
    assert "token=" not in page.url  # the secret leaves the address bar all the same
    assert _stored(page) == dash.OPERATOR_SECRET
    _shows_operator_data(page, live)


def test_a_link_loaded_afresh_does_not_replace_the_token_either(page: Page, live: Any) -> None:
    _sign_in_with_the_form(page, live, dash.OPERATOR_SECRET)
    # Another page in between, so the link is a full load of the dashboard (session storage
    # belongs to the tab and survives it).
    page.goto("about:blank")
    page.goto(f"{live.url}#token={dash.TENANT_SECRET}")
    expect(page.locator(NOTICE)).to_be_visible()
    assert "token=" not in page.url
    assert _stored(page) == dash.OPERATOR_SECRET
    _shows_operator_data(page, live)


def test_a_link_with_the_tabs_own_token_changes_nothing(page: Page, live: Any) -> None:
    _sign_in_with_the_form(page, live, dash.OPERATOR_SECRET)
    page.goto(f"{live.url}#token={dash.OPERATOR_SECRET}")
    expect(page.locator("#shell")).to_be_visible()
    expect(page.locator("main h1")).to_have_text("Overview")
    assert "token=" not in page.url
    assert _stored(page) == dash.OPERATOR_SECRET
    expect(page.locator(NOTICE)).to_have_count(0)


def test_after_signing_out_a_link_signs_in_again(page: Page, live: Any) -> None:
    _sign_in_with_the_form(page, live, dash.OPERATOR_SECRET)
    page.click("#sign-out")
    expect(page.locator("#login")).to_be_visible()
    page.goto(f"{live.url}#token={dash.TENANT_SECRET}")
    expect(page.locator("#shell")).to_be_visible()
    assert _stored(page) == dash.TENANT_SECRET
    expect(page.locator(NOTICE)).to_have_count(0)
