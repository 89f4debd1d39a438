"""The dashboard in headless Chromium (Debian's package, driven by Playwright), against the real
admin app under uvicorn with a real worker: every page shows live data; a failed job is retried
and a dead letter replayed from the UI and seen to complete; tenant tokens see their tenant only;
a wrong token gets the login form. Screenshots of every page are saved as test artifacts, to
``$DISPATCH_TEST_ARTIFACTS`` when set.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatch_core import Engine, JobState, WorkerState, tenant_scope
from dispatch_plugins.admin.auth import Token
from dispatch_plugins.admin.routes import stats

HERE = Path(__file__).parent
CHROMIUM = os.environ.get("DISPATCH_TEST_CHROMIUM", "/usr/bin/chromium")
#: Generous: a loaded 2-core CI machine runs the browser, the server and the worker at once.
TIMEOUT_MS = 20_000

try:
    from playwright.sync_api import Browser, Error as PlaywrightError, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the browser fixture reports it
    sync_playwright = None  # type: ignore[assignment]


def _unavailable(what: str) -> None:
    """Skip because ``what`` is missing, or fail when CI requires it (as tests/conftest.py)."""
    if os.environ.get("DISPATCH_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required in CI (DISPATCH_TEST_REQUIRE_SERVICES=1) but unavailable")
    pytest.skip(f"{what} unavailable")


def _helpers() -> Any:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module("_dashboard")


dash = _helpers()


# ---- fixtures --------------------------------------------------------------------------------


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
    """The running app (``live.url``) and what was seeded (``live.seeded``)."""
    base = tmp_path_factory.mktemp("dashboard")
    flags = base / "flags"
    flags.mkdir()
    tokens = [
        Token(name="ops", secret=dash.OPERATOR_SECRET, scopes=frozenset({"admin"})),
        Token(
            name="acme",
            secret=dash.TENANT_SECRET,
            scopes=frozenset({"read", "jobs:write", "dlq:write"}),
            tenant="acme",
        ),
    ]
    server = dash.LiveDispatch(dash.build_engine(base / "dispatch.db", flags), tokens)
    server.start()
    try:
        server.seeded = dash.seed(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("DISPATCH_TEST_ARTIFACTS")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("dashboard-artifacts")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh tab (own session storage) in UTC; an uncaught script error fails the test."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, timezone_id="UTC", locale="en-US"
    )
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _sign_in(page: Page, live: Any, secret: str, route: str = "/overview") -> None:
    page.goto(f"{live.url}#token={secret}")
    expect(page.locator("#shell")).to_be_visible()
    _go(page, live, route)


def _go(page: Page, live: Any, route: str) -> None:
    page.goto(f"{live.url}#{route}")


def _shot(page: Page, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"dashboard-{name}.png"), full_page=True)


def _row(page: Page, key: str, value: str) -> Any:
    return page.locator(f'tr[data-{key}="{value}"]')


# ---- tests -----------------------------------------------------------------------------------


def test_every_page_shows_live_data(page: Page, live: Any, artifacts: Path) -> None:
    seeded = live.seeded
    # Sign in through the form; the token never shows in the address bar.
    page.goto(live.url)
    expect(page.locator("#login")).to_be_visible()
    page.fill("#login-token", dash.OPERATOR_SECRET)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#shell")).to_be_visible()

    # Overview: counts, both charts, queue depths (three jobs wait in the paused queue).
    expect(page.locator("main h1")).to_have_text("Overview")
    expect(page.locator("svg.chart")).to_have_count(2)
    expect(page.locator("svg.chart .bar-completed").first).to_be_attached()
    reports = _row(page, "queue", "reports")
    expect(reports.locator(".depth")).to_have_text("3")
    expect(reports.locator(".badge")).to_have_text("paused")
    expect(page.locator("a.card", has_text="Dead letters")).to_be_visible()
    _shot(page, artifacts, "overview")

    # Jobs, through the sidebar: names, states, monospace ids linking to the detail.
    page.click(".nav >> text=Jobs")
    table = page.locator(".table-jobs")
    expect(table).to_contain_text("shop.send_receipt")
    expect(table).to_contain_text("shop.sync_inventory.flaky")
    expect(_row(page, "id", seeded.receipts[0]).locator("a.mono")).to_have_text(seeded.receipts[0])
    expect(page.locator(".chip.active")).to_contain_text("All")
    _shot(page, artifacts, "jobs")

    # A job: payload as pretty JSON, shown as text even when it holds markup.
    _go(page, live, f"/jobs/{seeded.receipts[-1]}")
    expect(page.locator("main h1")).to_have_text("shop.send_receipt")
    payload = page.locator(".panel", has_text="Payload").locator("pre.code")
    expect(payload).to_contain_text(dash.MARKUP)
    expect(payload).to_contain_text('"total": 60')
    expect(page.locator(".panel", has_text="Result").locator("pre.code")).to_contain_text(
        '"sent": true'
    )
    expect(page.locator("pre img, pre b")).to_have_count(0)
    _shot(page, artifacts, "job")

    # A failed job: attempts and the traceback, preformatted.
    _go(page, live, f"/jobs/{seeded.legacy_job}")
    expect(page.locator("#job-id + .badge")).to_have_text("failed")
    traceback = page.locator("pre.traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("ConnectionError: http://legacy.example refused")
    expect(page.locator(".kv").first).to_contain_text("1 of 1")
    _shot(page, artifacts, "job-failed")

    # Workflows: the definition and the run.
    page.click(".nav >> text=Workflows")
    expect(page.locator(".panel", has_text="Definitions")).to_contain_text("onboarding.welcome")
    run_link = page.locator(f'tr[data-id="{seeded.run_id}"] a.mono')
    expect(run_link).to_be_visible()
    _shot(page, artifacts, "workflows")

    # A run: one timeline bar per step, coloured by state.
    run_link.click()
    expect(page.locator("#run-id + .badge")).to_have_text("completed")
    for step in ("create-account", "cool-off", "send-welcome-email"):
        row = page.locator(f'.tl-row[data-step="{step}"]')
        expect(row.locator(".tl-name")).to_have_text(step)
        expect(row.locator(".tl-bar.tl-completed")).to_be_visible()
    _shot(page, artifacts, "run")

    # Cron: the entry with its next run (03:00 UTC).
    page.click(".nav >> text=Cron")
    nightly = _row(page, "cron", "reports.nightly")
    expect(nightly.locator(".next-run")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d 03:00:00$"))
    expect(nightly.locator(".badge")).to_have_text("enabled")
    _shot(page, artifacts, "cron")

    # Dead letters: entries with their error.
    page.click(".nav >> text=Dead letters")
    catalog = page.locator("tr[data-id]", has_text="shop.import_catalog.flaky")
    expect(catalog.locator(".error-text")).to_contain_text("inventory service unavailable")
    _shot(page, artifacts, "dlq")

    # Workers: the worker, marked as the leader.
    page.click(".nav >> text=Workers")
    expect(_row(page, "worker", seeded.leader).locator(".badge-leader")).to_have_text("leader")
    expect(page.locator("#leader-id")).to_have_text(seeded.leader)
    _shot(page, artifacts, "workers")


def test_retry_a_failed_job_from_the_ui(page: Page, live: Any, artifacts: Path) -> None:
    job_id = live.seeded.flaky_job
    # The filter lives in the URL hash and fills the form.
    _sign_in(page, live, dash.OPERATOR_SECRET, "/jobs?state=failed")
    expect(page.locator("#filter-state")).to_have_value("failed")
    expect(page.locator(".table-jobs tr[data-id]").first).to_be_visible()
    expect(page.locator(".table-jobs .badge:not(.badge-failed)")).to_have_count(0)
    page.locator(f'tr[data-id="{job_id}"] a.mono').click()

    state = page.locator("#job-id + .badge")
    expect(state).to_have_text("failed")
    page.get_by_role("button", name="Retry").click()
    # The page polls: the job goes back to pending, the worker runs it, it completes.
    expect(state).to_have_text("completed")
    expect(page.locator(".panel", has_text="Result").locator("pre.code")).to_have_text(
        '"synced sku-1"'
    )
    _shot(page, artifacts, "job-retried")
    assert live.call(live.engine.aget_job(job_id)).state is JobState.COMPLETED


def test_replay_a_dead_letter_from_the_ui(page: Page, live: Any, artifacts: Path) -> None:
    _sign_in(page, live, dash.OPERATOR_SECRET, "/dlq?name=shop.import_catalog.flaky")
    expect(page.locator("#filter-name")).to_have_value("shop.import_catalog.flaky")
    row = page.locator("tr[data-id]", has_text="shop.import_catalog.flaky")
    expect(row).to_have_count(1)
    row.locator("text=Details").click()
    expect(page.locator(".dlq-detail pre.traceback")).to_contain_text("RuntimeError")
    row.get_by_role("button", name="Replay", exact=True).click()

    expect(row.locator(".badge-replayed")).to_be_visible()
    replay_link = row.locator("a.mono")
    expect(replay_link).to_have_text(re.compile(r"^job_"))
    _shot(page, artifacts, "dlq-replayed")
    replay_link.click()
    expect(page.locator("main h1")).to_have_text("shop.import_catalog.flaky")
    expect(page.locator("#job-id + .badge")).to_have_text("completed")


def test_a_long_dead_letter_payload_shows_as_a_preview(
    page: Page, live: Any, artifacts: Path
) -> None:
    # The list carries the payload's first 200 bytes; the button fetches the entry whole.
    url = "http://legacy.example/" + "p" * 2000 + "/end"
    job = live.call(live.engine.aenqueue("legacy.ping", url, queue="previews"))

    def dead() -> bool:
        return live.call(live.engine.aget_job(job.id)).state is JobState.FAILED

    dash.wait_for(dead, "the long job to be dead-lettered")
    _sign_in(page, live, dash.OPERATOR_SECRET, "/dlq?queue=previews")
    row = page.locator("tr[data-id]", has_text="legacy.ping")
    expect(row).to_have_count(1)
    row.locator("text=Details").click()
    preview = page.locator(".dlq-detail .payload-preview")
    expect(preview.locator("pre.code")).to_have_text(('"' + url)[:200] + "…")
    expect(preview).to_contain_text("2.0 KiB of JSON")
    _shot(page, artifacts, "dlq-preview")
    preview.get_by_role("button", name="Show the whole payload").click()
    whole = page.locator(".dlq-detail pre.code")
    expect(whole).to_have_text(f'"{url}"')
    expect(page.locator(".dlq-detail .payload-preview")).to_have_count(0)


def test_replay_all_in_batches_and_purge(page: Page, live: Any, artifacts: Path) -> None:
    engine = live.engine
    _sign_in(page, live, dash.OPERATOR_SECRET, "/dlq?queue=images")
    expect(page.locator("tr[data-id]")).to_have_count(3)
    page.get_by_role("button", name="Replay all").click()
    page.locator("#dialog").get_by_role("button", name="Replay all").click()
    expect(page.locator(".task")).to_contain_text("Replayed 3 entries.")
    expect(page.locator("tr[data-id] .badge-replayed")).to_have_count(3)

    # Purge the queue "legacy" up to now, confirmed in the dialog.
    _go(page, live, "/dlq?queue=legacy")
    expect(page.locator("tr[data-id]")).to_have_count(1)
    page.get_by_role("button", name="Purge…").click()
    dialog = page.locator("#dialog")
    dialog.locator("#purge-preset").select_option("0")
    expect(dialog).to_contain_text("queue legacy")
    dialog.get_by_role("button", name="Purge").click()
    expect(page.locator(".task")).to_contain_text("Purged 1 entry.")
    expect(page.locator("tr.empty")).to_contain_text("empty")
    _shot(page, artifacts, "dlq-purged")
    assert live.call(engine.acount_dlq(queue="legacy")) == 0

    def replays_done() -> bool:
        jobs = live.call(engine.alist_jobs(name="images.resize.flaky", limit=10))
        return sum(j.state is JobState.COMPLETED for j in jobs) == 3

    dash.wait_for(replays_done, "the three replayed jobs to complete")


def test_load_more_follows_the_cursor(page: Page, live: Any) -> None:
    _sign_in(page, live, dash.OPERATOR_SECRET, "/jobs?name=archive.compact")
    rows = page.locator(".table-jobs tr[data-id]")
    expect(rows).to_have_count(50)
    page.get_by_role("button", name="Load more").click()
    expect(rows).to_have_count(60)
    expect(page.get_by_role("button", name="Load more")).to_have_count(0)


def test_a_tenant_token_sees_only_its_tenant(page: Page, live: Any, artifacts: Path) -> None:
    _sign_in(page, live, dash.TENANT_SECRET, "/jobs")
    table = page.locator(".table-jobs")
    expect(table.locator(f'tr[data-id="{live.seeded.acme_job}"]')).to_contain_text("acme")
    expect(table.locator("tr[data-id]")).to_have_count(1)
    expect(table).not_to_contain_text("billing.refund")
    expect(table).not_to_contain_text("shop.send_receipt")
    _shot(page, artifacts, "tenant-jobs")

    # Cluster-wide pages explain that they need an operator token.
    page.click(".nav >> text=Workers")
    expect(page.locator(".notice")).to_contain_text("needs an operator token")
    page.click(".nav >> text=Overview")
    expect(page.locator(".panel", has_text="Queue depths")).to_contain_text("operator token")
    _shot(page, artifacts, "tenant-overview")


def test_jobs_no_worker_knows_are_flagged_on_the_overview(
    page: Page, browser: Browser, tmp_path: Path, artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs enqueued under names the running worker lacks (by another deployment's engine on
    the same store) show in a warning panel with their queue, name and count, for the caller's
    tenant only; the panel goes once they are gone, and says so when no worker runs at all. On
    the memory store, so that it needs no SQLite."""
    # /v1/stats reuses these rows for UNHANDLED_TTL seconds (test_api_unhandled.py checks it);
    # here the panel must follow the store within a poll.
    monkeypatch.setattr(stats, "UNHANDLED_TTL", 0.0)
    engine = Engine("memory://")

    @engine.job(name="shop.send_receipt", queue="emails")
    async def send_receipt(order: int) -> int:
        return order

    producer = Engine(engine.store, load_entrypoints=False)

    @producer.job(name="__main__.send_welcome", queue="emails")
    async def send_welcome(user: int) -> None:
        return None

    @producer.job(name="billing.invoice_v1")
    async def invoice(amount: int) -> None:
        return None

    tokens = [
        Token(name="ops", secret=dash.OPERATOR_SECRET, scopes=frozenset({"admin"})),
        Token(name="acme", secret=dash.TENANT_SECRET, scopes=frozenset({"read"}), tenant="acme"),
    ]
    server = dash.LiveDispatch(engine, tokens)
    server.start()
    try:

        def worker_running() -> bool:
            workers = server.call(engine.aworkers())
            return any(w.state is WorkerState.RUNNING and w.names for w in workers)

        dash.wait_for(worker_running, "the worker to register its names")
        _sign_in(page, server, dash.OPERATOR_SECRET)
        # Loaded, with nothing waiting: no panel.
        expect(page.locator("a.card", has_text="Workers")).to_contain_text("1")
        expect(page.locator("#unhandled")).to_have_count(0)

        async def enqueue() -> list[str]:
            jobs = [await producer.aenqueue("__main__.send_welcome", n) for n in range(2)]
            with tenant_scope("acme"):
                jobs.append(await producer.aenqueue("__main__.send_welcome", 2))
            with tenant_scope("globex"):
                jobs.append(await producer.aenqueue("billing.invoice_v1", 10))
            jobs.append(await engine.aenqueue("shop.send_receipt", 1))  # the worker runs it
            return [j.id for j in jobs[:4]]

        waiting = server.call(enqueue())
        panel = page.locator("#unhandled")
        expect(panel.locator("h2")).to_have_text("4 jobs wait for a name no running worker knows")
        expect(panel).to_contain_text("a module the workers do not import")
        welcome = panel.locator('tr[data-unhandled-name="__main__.send_welcome"]')
        expect(welcome.locator("td").nth(0)).to_have_text("emails")
        expect(welcome.locator("td.num")).to_have_text("3")
        invoices = panel.locator('tr[data-unhandled-name="billing.invoice_v1"]')
        expect(invoices.locator("td").nth(0)).to_have_text("default")
        expect(invoices.locator("td.num")).to_have_text("1")
        expect(panel.locator("tbody tr")).to_have_count(2)
        _shot(page, artifacts, "overview-unhandled")

        # The tenant sees its own job only: neither globex's name nor the others' counts.
        context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id="UTC")
        try:
            tenant = context.new_page()
            _sign_in(tenant, server, dash.TENANT_SECRET)
            tenant_panel = tenant.locator("#unhandled")
            expect(tenant_panel.locator("h2")).to_have_text(
                "1 job waits for a name no running worker knows"
            )
            expect(tenant_panel.locator("tbody tr")).to_have_count(1)
            expect(tenant_panel.locator("td.num")).to_have_text("1")
            expect(tenant_panel).not_to_contain_text("billing.invoice_v1")
        finally:
            context.close()

        # Each name leads to the jobs of that name (and queue).
        welcome.get_by_role("link", name="__main__.send_welcome").click()
        expect(page.locator("#filter-name")).to_have_value("__main__.send_welcome")
        expect(page.locator("#filter-queue")).to_have_value("emails")
        expect(page.locator(".table-jobs tr[data-id]")).to_have_count(3)

        # Once they are cancelled, the panel goes (the overview polls).
        _go(page, server, "/overview")
        expect(panel.locator("tbody tr")).to_have_count(2)

        async def cancel() -> None:
            for job_id in waiting:
                await engine.acancel(job_id)

        server.call(cancel())
        expect(panel).to_have_count(0)
        expect(page.locator("a.card", has_text="Cancelled")).to_contain_text("4")

        # With no worker running at all, every waiting job is listed, and the panel says why.
        server.stop_worker()
        expect(page.locator("a.card", has_text="Workers")).to_contain_text("0")
        server.call(engine.aenqueue("shop.send_receipt", 2))
        expect(panel.locator("h2")).to_have_text("1 job waits, and no worker is running")
        expect(panel.locator('tr[data-unhandled-name="shop.send_receipt"] td.num')).to_have_text(
            "1"
        )
    finally:
        server.stop()


def test_a_wrong_token_shows_the_login_form(page: Page, live: Any, artifacts: Path) -> None:
    page.goto(f"{live.url}#token=not-a-valid-token-at-all")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-error")).to_contain_text("did not accept")
    assert "token=" not in page.url  # taken out of the address bar at once

    page.fill("#login-token", "still-not-a-valid-token")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That token was not accepted.")
    expect(page.locator("#shell")).to_be_hidden()
    _shot(page, artifacts, "login")


def test_the_page_is_served_with_a_strict_policy(live: Any) -> None:
    index = httpx.get(live.url)
    assert index.status_code == 200
    policy = index.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert index.headers["cache-control"] == "no-cache"
    # Every script is a file: nothing inline for the policy to allow.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", index.text)
    script = httpx.get(f"{live.url}static/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{live.url}static/nope.js").status_code == 404
    # The mount point without its slash leads to the page (relative asset URLs need the slash).
    bare = httpx.get(live.url.rstrip("/"), follow_redirects=True)
    assert bare.status_code == 200
    assert str(bare.url) == live.url


def test_dispatch_serve_on_the_demo_app_shows_a_working_dashboard(
    page: Page, tmp_path: Path, artifacts: Path
) -> None:
    """The issue's "done when": ``dispatch serve`` on the demo app (as ``make serve`` runs it),
    its dev-token login URL opened in the browser, shows the demo's jobs, cron and workers."""
    repo = HERE.parents[2]
    log = tmp_path / "serve.log"
    env = {**os.environ, "DISPATCH_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    command = [
        str(Path(sys.executable).with_name("dispatch")),
        *("serve", "examples.demo_app:engine", "--worker", "--dev-token", "--port", "0"),
    ]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        found: list[str] = []

        def login_printed() -> bool:
            assert server.poll() is None, log.read_text()
            found[:] = re.findall(r"dashboard login: (http://\S+)", log.read_text())
            return bool(found)

        dash.wait_for(login_printed, "dispatch serve to print its login URL")
        login = found[0]
        base = login.split("#", 1)[0]
        # The demo's cron entry fires every 2 s on the in-process worker: jobs appear by themselves.
        page.goto(login)
        expect(page.locator("#shell")).to_be_visible()
        assert "token=" not in page.url
        expect(page.locator(".panel", has_text="Queue depths")).to_contain_text("maintenance")
        page.goto(f"{base}#/jobs?name=demo.report")
        expect(page.locator(".table-jobs")).to_contain_text("completed")
        page.goto(f"{base}#/cron")
        expect(page.locator("body")).to_contain_text("demo.report")
        page.goto(f"{base}#/workers")
        expect(page.locator("body")).to_contain_text("leader")
        _shot(page, artifacts, "serve-demo-workers")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(30) == 0, log.read_text()
        finally:
            if server.poll() is None:
                server.kill()
