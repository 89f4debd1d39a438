"""``dispatch jobs / dlq / cron / workflows / queues / workers --url http://...``: the same
commands, through a real admin API server, print what they print on the store itself."""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dispatch_core.cli import cli
from dispatch_core.models import utcnow

sys.path.insert(0, str(Path(__file__).parent))
import _live_server as live_server

_CLI_MODULES = ("_jobs", "_dlq", "_cron", "_workers", "_workflows")
_ID = re.compile(r"\b[a-z]+_[0-9a-z]{26}\b")


def run(*args: str, input: str | None = None) -> Result:
    """Invoke the CLI in-process; unexpected exceptions fail the test."""
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def one_error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def without_ids(text: str) -> str:
    """``text`` with every TypeID replaced (two new jobs have two ids)."""
    return _ID.sub("<id>", text)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DISPATCH_APP", "DISPATCH_URL", "DISPATCH_TOKEN", "DISPATCH_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DISPATCH_TOKEN", live_server.OPS)
    monkeypatch.setenv("COLUMNS", "120")


@pytest.fixture(autouse=True)
def _frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """One "now" for the CLI's relative times ("3m ago"), so that two runs of a command print
    the same table whatever the clock did in between."""
    now = utcnow()
    for name in _CLI_MODULES:
        monkeypatch.setattr(f"dispatch_core.cli.{name}.utcnow", lambda: now)


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[live_server.LiveServer, live_server.Data, str]]:
    """One server for the read-only tests."""
    with live_server.serving(tmp_path_factory.mktemp("remote")) as served:
        yield served


@pytest.fixture
def own(tmp_path: Path) -> Iterator[tuple[live_server.LiveServer, live_server.Data, str]]:
    """A server (and store) of the test's own, for the tests that change things."""
    with live_server.serving(tmp_path, failures=8) as served:
        yield served


def both(url: str, store: str, *args: str) -> tuple[Result, Result]:
    """The command on the remote server, then on the store."""
    return run(*args, "--url", url), run(*args, "--url", store)


# -- reading ---------------------------------------------------------------------------------------

READ_COMMANDS = [
    ["jobs", "ls"],
    ["jobs", "ls", "--state", "failed"],
    ["jobs", "ls", "--queue", "default", "--order", "asc", "--limit", "2"],
    ["jobs", "ls", "--tenant", "acme", "--json"],
    ["jobs", "counts"],
    ["jobs", "counts", "--queue", "errors", "--json"],
    ["dlq", "ls"],
    ["dlq", "ls", "--order", "desc", "--limit", "2"],
    ["dlq", "ls", "--json"],
    ["cron", "ls"],
    ["cron", "ls", "--json"],
    ["cron", "show", "nightly-report"],
    ["queues"],
    ["queues", "ls", "--json"],
    ["workers"],
    ["workers", "--all"],
    ["workers", "--all", "--json"],
    ["workflows", "ls"],
    ["workflows", "ls", "--state", "waiting", "--json"],
]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_read_commands_print_the_same_remotely(
    shared: tuple[live_server.LiveServer, live_server.Data, str], args: list[str]
) -> None:
    live, _, store = shared
    remote, direct = both(live.url, store, *args)
    assert direct.exit_code == 0, direct.output
    assert remote.exit_code == 0, remote.output
    assert remote.stdout == direct.stdout
    assert remote.stderr == direct.stderr
    assert "No " not in direct.stdout.splitlines()[0]  # the data is there to compare


def test_show_commands_print_the_same_remotely(
    shared: tuple[live_server.LiveServer, live_server.Data, str],
) -> None:
    live, data, store = shared
    entry_id = _ID.findall(run("dlq", "ls", "--url", store).stdout)[0]
    for args in (
        ["jobs", "show", data.failed[0]],
        ["jobs", "show", data.pending[0], "--json"],
        ["dlq", "show", entry_id],
        ["dlq", "show", entry_id, "--json"],
        ["workflows", "show", data.runs[0]],
        ["workflows", "show", data.runs[0], "--json"],
    ):
        remote, direct = both(live.url, store, *args)
        assert direct.exit_code == 0, direct.output
        assert (remote.exit_code, remote.stdout) == (0, direct.stdout), args


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "show", "job_01h2xcejqtf2nbrexx3vqjhp41"],
        ["dlq", "show", "dlq_01h2xcejqtf2nbrexx3vqjhp41"],
        ["workflows", "show", "wfr_01h2xcejqtf2nbrexx3vqjhp41"],
        ["cron", "show", "nope"],
        ["cron", "trigger", "nope"],
    ],
    ids=" ".join,
)
def test_unknown_objects_are_the_same_error(
    shared: tuple[live_server.LiveServer, live_server.Data, str], args: list[str]
) -> None:
    live, _, store = shared
    remote, direct = both(live.url, store, *args)
    assert one_error_line(remote) == one_error_line(direct)


def test_pages_follow_with_after(
    shared: tuple[live_server.LiveServer, live_server.Data, str],
) -> None:
    live, _, store = shared
    first = run("jobs", "ls", "--limit", "3", "--url", live.url)
    (after,) = re.findall(r"--after (\S+)\)", first.stderr)
    remote, direct = both(live.url, store, "jobs", "ls", "--limit", "3", "--after", after)
    assert remote.stdout == direct.stdout
    assert after not in remote.stdout
    assert remote.stdout.count("\n") > 1


# -- tenants and tokens ----------------------------------------------------------------------------


def test_a_tenant_token_sees_only_its_tenant(
    shared: tuple[live_server.LiveServer, live_server.Data, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    live, data, store = shared
    monkeypatch.setenv("DISPATCH_TOKEN", live_server.ACME)
    remote = run("jobs", "ls", "--url", live.url)
    direct = run("jobs", "ls", "--tenant", "acme", "--url", store)
    assert remote.stdout == direct.stdout
    assert sorted(_ID.findall(remote.stdout)) == sorted(data.acme_jobs)
    assert "No dead-letter" not in run("dlq", "ls", "--url", store).stdout
    assert run("dlq", "ls", "--url", live.url).stdout == "The dead-letter queue is empty.\n"
    hidden = run("jobs", "show", data.failed[0], "--url", live.url)
    assert one_error_line(hidden) == f"Error: job {data.failed[0]!r} not found"
    line = one_error_line(run("queues", "--url", live.url))
    assert "operator token" in line
    assert "DISPATCH_TOKEN" in line
    other = one_error_line(run("jobs", "ls", "--tenant", "globex", "--url", live.url))
    assert "only a token bound to no tenant may choose the tenant" in other


def test_a_missing_token_is_a_clear_error(
    shared: tuple[live_server.LiveServer, live_server.Data, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    live, _, _ = shared
    monkeypatch.delenv("DISPATCH_TOKEN")
    line = one_error_line(run("jobs", "ls", "--url", live.url))
    assert line == (
        f"Error: the Dispatch admin API at {live.url} needs a token, and DISPATCH_TOKEN is not "
        "set: export DISPATCH_TOKEN=<token>"
    )


def test_a_wrong_token_is_a_clear_error(
    shared: tuple[live_server.LiveServer, live_server.Data, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    live, _, _ = shared
    monkeypatch.setenv("DISPATCH_TOKEN", "not-a-token-of-this-server")
    line = one_error_line(run("dlq", "ls", "--url", live.url))
    assert f"the Dispatch admin API at {live.url} refused the token in DISPATCH_TOKEN" in line
    assert "not-a-token" not in line


def test_a_missing_scope_is_named(
    shared: tuple[live_server.LiveServer, live_server.Data, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    live, data, _ = shared
    monkeypatch.setenv("DISPATCH_TOKEN", live_server.READER)
    assert run("jobs", "ls", "--url", live.url).exit_code == 0
    line = one_error_line(run("jobs", "cancel", data.pending[0], "--url", live.url))
    assert "lacks the scope 'jobs:write'" in line
    assert "set DISPATCH_TOKEN to a token with the scope 'jobs:write'" in line


def test_the_url_comes_from_the_environment_too(
    shared: tuple[live_server.LiveServer, live_server.Data, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    live, _, store = shared
    monkeypatch.setenv("DISPATCH_URL", live.url)
    assert run("cron", "ls").stdout == run("cron", "ls", "--url", store).stdout


def test_a_wrong_mount_point_is_named(
    shared: tuple[live_server.LiveServer, live_server.Data, str],
) -> None:
    live, _, _ = shared
    root = live.url.removesuffix("/dispatch")
    line = one_error_line(run("jobs", "ls", "--url", root))
    assert "does not look like a Dispatch admin API" in line
    assert "--url must be where the admin app is mounted" in line


def test_a_refused_connection_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{port}/dispatch"
        line = one_error_line(run("workers", "--url", url))
    assert line.startswith(f"Error: cannot connect to the Dispatch admin API at {url}: ")
    assert "is the server running there?" in line


# -- changing things -------------------------------------------------------------------------------


def test_jobs_cancel_and_retry(own: tuple[live_server.LiveServer, live_server.Data, str]) -> None:
    live, data, store = own
    remote = run("jobs", "cancel", data.pending[0], "--url", live.url)
    direct = run("jobs", "cancel", data.pending[1], "--url", store)
    assert remote.exit_code == 0, remote.output
    assert without_ids(remote.stdout) == without_ids(direct.stdout) == "Cancelled <id> (app.add).\n"
    again_remote = run("jobs", "cancel", data.pending[0], "--url", live.url)
    again_direct = run("jobs", "cancel", data.pending[1], "--url", store)
    assert without_ids(one_error_line(again_remote)) == without_ids(one_error_line(again_direct))
    remote = run("jobs", "retry", data.failed[0], "--url", live.url)
    direct = run("jobs", "retry", data.failed[1], "--url", store)
    assert without_ids(remote.stdout) == without_ids(direct.stdout)
    assert "is pending again, with 1 attempt." in remote.stdout
    show = run("jobs", "show", data.failed[0], "--json", "--url", store)
    assert '"state": "pending"' in show.stdout
    pending = run("jobs", "retry", data.failed[0], "--url", live.url)
    assert without_ids(one_error_line(pending)) == without_ids(
        one_error_line(run("jobs", "retry", data.failed[1], "--url", store))
    )


def test_dlq_replay_by_id(own: tuple[live_server.LiveServer, live_server.Data, str]) -> None:
    live, _, store = own
    ids = _ID.findall(run("dlq", "ls", "--url", store).stdout)
    remote = run("dlq", "replay", ids[0], "--url", live.url)
    direct = run("dlq", "replay", ids[1], "--url", store)
    assert remote.exit_code == 0, remote.output
    assert without_ids(remote.stdout) == without_ids(direct.stdout)
    assert remote.stdout.startswith(f"Replayed {ids[0]} as job_")


def test_dlq_replay_all_shows_a_progress_bar(
    own: tuple[live_server.LiveServer, live_server.Data, str],
) -> None:
    live, _, store = own
    result = run("dlq", "replay", "--all", "--url", live.url)
    assert result.exit_code == 0, result.output
    assert result.stdout == "Replayed 8 entries.\n"
    assert "Replaying dead-letter entries" in result.stderr
    pending = run("jobs", "ls", "--state", "pending", "--name", "app.boom", "--url", store)
    assert len(_ID.findall(pending.stdout)) == 8
    again = run("dlq", "replay", "--all", "--url", live.url)
    assert again.stdout == run("dlq", "replay", "--all", "--url", store).stdout
    assert "Nothing to replay" in again.stdout


def test_dlq_replay_all_walks_every_page(
    own: tuple[live_server.LiveServer, live_server.Data, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    live, _, _ = own
    # Pages of 3 on both sides of the wire: the CLI's and the API's.
    monkeypatch.setattr("dispatch_core.cli._dlq._PAGE", 3)
    monkeypatch.setattr("dispatch_plugins.admin.client.MAX_LIMIT", 2)
    result = run("dlq", "replay", "--all", "--queue", "errors", "--url", live.url)
    assert result.stdout == "Replayed 8 entries.\n"


def test_dlq_purge_in_batches_shows_a_progress_bar(
    own: tuple[live_server.LiveServer, live_server.Data, str],
) -> None:
    live, _, store = own
    result = run("dlq", "purge", "--all", "--batch-size", "3", "--url", live.url, input="y\n")
    assert result.exit_code == 0, result.output
    assert f"Delete every entry from the dead-letter queue of {live.url}?" in result.stdout
    assert result.stdout.endswith("Purged 8 dead-letter entries.\n")
    assert "Purging dead-letter entries" in result.stderr
    assert run("dlq", "ls", "--url", store).stdout == "The dead-letter queue is empty.\n"
    again_remote, again_direct = both(live.url, store, "dlq", "purge", "--all", "--yes")
    assert again_remote.stdout == again_direct.stdout == "Purged 0 dead-letter entries.\n"


def test_dlq_purge_of_old_entries_keeps_recent_ones(
    own: tuple[live_server.LiveServer, live_server.Data, str],
) -> None:
    live, _, store = own
    remote, direct = both(live.url, store, "dlq", "purge", "--older-than", "1d", "--yes")
    assert remote.stdout == direct.stdout == "Purged 0 dead-letter entries.\n"
    assert len(_ID.findall(run("dlq", "ls", "--url", store).stdout)) == 8


def test_cron_trigger_enable_disable(
    own: tuple[live_server.LiveServer, live_server.Data, str],
) -> None:
    live, _, store = own
    for args in (
        ["cron", "disable", "nightly-report"],
        ["cron", "enable", "nightly-report"],
    ):
        remote, direct = both(live.url, store, *args)
        assert remote.exit_code == 0, remote.output
        assert remote.stdout == direct.stdout
    remote, direct = both(live.url, store, "cron", "trigger", "hourly-thumbs")
    assert without_ids(remote.stdout) == without_ids(direct.stdout)
    assert remote.stdout.startswith("Triggered cron entry 'hourly-thumbs': enqueued job job_")
    disabled = run("cron", "disable", "hourly-thumbs", "--url", live.url)
    assert disabled.stdout == "Disabled cron entry 'hourly-thumbs'.\n"
    assert (
        '"enabled": false' in run("cron", "show", "hourly-thumbs", "--json", "--url", store).stdout
    )


def test_queues_pause_and_resume(
    own: tuple[live_server.LiveServer, live_server.Data, str],
) -> None:
    live, _, store = own
    for args in (["queues", "resume", "images"], ["queues", "pause", "default"]):
        remote, direct = both(live.url, store, *args)
        assert remote.exit_code == 0, remote.output
        assert remote.stdout == direct.stdout
    # The group's own --url reaches its subcommands, as on a store.
    result = run("queues", "--url", live.url, "resume", "default")
    assert result.stdout == "Resumed queue 'default'.\n"
    assert run("queues", "ls", "--url", live.url).stdout == run("queues", "--url", store).stdout


def test_workflows_signal_and_cancel(
    own: tuple[live_server.LiveServer, live_server.Data, str],
) -> None:
    live, data, store = own
    first, second = data.runs
    remote = run(
        "workflows", "signal", first, "paid", "--payload", '{"cents": 5}', "--url", live.url
    )
    direct = run("workflows", "signal", second, "paid", "--url", store)
    assert remote.exit_code == 0, remote.output
    assert without_ids(remote.stdout) == without_ids(direct.stdout) == "Sent 'paid' to <id>.\n"
    show_remote, show_direct = both(live.url, store, "workflows", "show", first)
    assert show_remote.stdout == show_direct.stdout
    remote = run("workflows", "cancel", first, "--url", live.url)
    direct = run("workflows", "cancel", second, "--url", store)
    assert without_ids(remote.stdout) == without_ids(direct.stdout)
    assert "Cancelled" in remote.stdout
    finished_remote = run("workflows", "cancel", first, "--url", live.url)
    finished_direct = run("workflows", "cancel", second, "--url", store)
    assert without_ids(one_error_line(finished_remote)) == without_ids(
        one_error_line(finished_direct)
    )


def test_help_mentions_remote_urls() -> None:
    result = run("jobs", "ls", "--help")
    assert "http(s) URL of a Dispatch admin API" in " ".join(result.stdout.split())
    assert "DISPATCH_TOKEN" in result.stdout
