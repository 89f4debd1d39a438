"""Jobs no worker takes, and failures: the worker's warning, the drain's warning, `dispatch jobs
counts`, and how failed attempts and dead letters are logged."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner, Result

from dispatch_core import (
    Constant,
    Engine,
    FailJob,
    JobContext,
    JobState,
    RunnableCount,
    Worker,
    WorkerInfo,
)
from dispatch_core.cli import cli
from dispatch_core.models import utcnow
from dispatch_core.stores import MemoryStore

HERE = Path(__file__).parent
DISPATCH = Path(sys.executable).with_name("dispatch")
FAST = {"heartbeat_interval": 0.05, "worker_timeout": 0.3, "rescue_interval": 0.05}


class CountingStore(MemoryStore):
    """Counts ``count_runnable`` calls; the first ``failures`` of them fail like a dropped
    connection."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.calls = 0
        self.failures = failures

    async def count_runnable(
        self,
        *,
        now: datetime,
        tenant: str | None = None,
        exclude_names: Collection[str] = (),
    ) -> list[RunnableCount]:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store unreachable (count_runnable)")
        return await super().count_runnable(now=now, tenant=tenant, exclude_names=exclude_names)


def make_engine(store: MemoryStore) -> Engine:
    return Engine(store, load_entrypoints=False, backoff=Constant(interval=0))


async def wait_for(predicate: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        got = predicate()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def warnings_of(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]


async def producer_jobs(store: MemoryStore) -> None:
    """What another application (or a script run as __main__) enqueued into the store."""
    producer = make_engine(store)

    @producer.job(name="__main__.send_welcome", queue="emails")
    async def stray(n: int) -> None: ...

    @producer.job(name="billing.charge")
    async def charge(n: int) -> None: ...

    @producer.job(name="reports.build", queue="reports")
    async def build(n: int) -> None: ...

    await stray.aenqueue_many([1, 2])
    await charge.aenqueue(1)
    await build.aenqueue(1)


def worker_app(store: MemoryStore, extra_names: int = 0) -> tuple[Engine, list[int]]:
    engine = make_engine(store)
    ran: list[int] = []

    @engine.job(name="myapp.send_welcome", queue="emails")
    async def send_welcome(n: int) -> None:
        ran.append(n)

    for i in range(extra_names):
        engine.job(name=f"extra.n{i:02d}")(_noop)
    return engine, ran


async def _noop(n: int) -> None: ...


# -- the worker's warning --------------------------------------------------------------------------


async def test_worker_warns_once_per_name_of_its_queues(caplog: pytest.LogCaptureFixture) -> None:
    store = CountingStore()
    await producer_jobs(store)
    engine, ran = worker_app(store)
    mine = await engine.jobs["myapp.send_welcome"].aenqueue(7)
    w = engine.worker(queues=["emails", "default"], unhandled_check_interval=0.02)
    with caplog.at_level(logging.DEBUG, logger="dispatch_core"):
        task = asyncio.ensure_future(w.run())
        await wait_for(lambda: store.calls >= 5, "five checks")
        w.stop(grace=1)
        await asyncio.wait_for(task, 5)
    assert ran == [7]  # its own job ran, and was never reported
    assert (await engine.aget_job(mine.id)).state is JobState.COMPLETED
    [stray] = warnings_of(caplog, "'__main__.send_welcome'")
    assert "2 runnable jobs named '__main__.send_welcome' wait in queue 'emails'" in stray
    assert "no running worker registers that name" in stray
    assert "This worker runs: myapp.send_welcome." in stray
    assert "aliases=['__main__.send_welcome'] to myapp.send_welcome" in stray
    [charge] = warnings_of(caplog, "'billing.charge'")
    assert "1 runnable job named 'billing.charge' waits in queue 'default'" in charge
    assert "run a worker whose app imports the module that defines it" in charge
    # not its queue: a worker of that queue would report it
    assert warnings_of(caplog, "reports.build") == []
    assert warnings_of(caplog, "'myapp.send_welcome' w") == []


async def test_a_name_another_running_worker_registers_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = CountingStore()
    await producer_jobs(store)
    now = utcnow()
    await store.register_worker(
        WorkerInfo(
            id="wkr_billing",
            hostname="h",
            pid=1,
            queues=("default",),
            concurrency=1,
            version="0",
            names=("billing.charge",),
            started_at=now,
            last_seen=now + timedelta(hours=1),  # not declared dead during the test
        )
    )
    engine, _ = worker_app(store)
    w = engine.worker(unhandled_check_interval=0.02, lead=False)
    with caplog.at_level(logging.WARNING, logger="dispatch_core"):
        task = asyncio.ensure_future(w.run())
        await wait_for(lambda: store.calls >= 3, "three checks")
        w.stop(grace=1)
        await asyncio.wait_for(task, 5)
    assert warnings_of(caplog, "billing.charge") == []
    assert len(warnings_of(caplog, "'__main__.send_welcome'")) == 1
    assert len(warnings_of(caplog, "'reports.build'")) == 1  # it takes every queue


async def test_the_known_names_are_cut_to_twenty(caplog: pytest.LogCaptureFixture) -> None:
    store = CountingStore()
    await producer_jobs(store)
    engine, _ = worker_app(store, extra_names=24)  # 25 names in all
    w = engine.worker(unhandled_check_interval=0.02)
    with caplog.at_level(logging.WARNING, logger="dispatch_core"):
        task = asyncio.ensure_future(w.run())
        await wait_for(lambda: store.calls >= 1, "a check")
        await wait_for(lambda: bool(warnings_of(caplog, "billing.charge")), "the warning")
        w.stop(grace=1)
        await asyncio.wait_for(task, 5)
    [message] = warnings_of(caplog, "billing.charge")
    shown = [f"extra.n{i:02d}" for i in range(20)]
    assert f"This worker runs: {', '.join(shown)} … and 5 more." in message


async def test_a_failed_check_is_logged_at_debug_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = CountingStore(failures=2)
    await producer_jobs(store)
    engine, _ = worker_app(store)
    w = engine.worker(unhandled_check_interval=0.02)
    with caplog.at_level(logging.DEBUG, logger="dispatch_core"):
        task = asyncio.ensure_future(w.run())
        await wait_for(lambda: bool(warnings_of(caplog, "billing.charge")), "the warning")
        w.stop(grace=1)
        await asyncio.wait_for(task, 5)
    failed = [r for r in caplog.records if "checking for unhandled jobs failed" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.DEBUG, logging.DEBUG]
    assert "store unreachable" in failed[0].getMessage()


async def test_the_check_waits_a_few_seconds_then_stops_with_the_worker() -> None:
    store = CountingStore()
    engine, _ = worker_app(store)
    w = engine.worker()  # default interval: the first check comes seconds after the start

    def checks() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "dispatch-unhandled-jobs"]

    task = asyncio.ensure_future(w.run())
    await wait_for(lambda: bool(checks()), "the check's task")
    [check] = checks()
    await asyncio.sleep(0.2)
    assert store.calls == 0
    w.stop(grace=1)
    await asyncio.wait_for(task, 5)
    assert check.cancelled()


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(Exception, match="unhandled_check_interval must be > 0 seconds, got 0"):
        Worker(make_engine(MemoryStore()), unhandled_check_interval=0)


# -- the drain's warning ---------------------------------------------------------------------------


async def test_drain_names_the_jobs_it_left(caplog: pytest.LogCaptureFixture) -> None:
    store = CountingStore()
    await producer_jobs(store)
    engine, ran = worker_app(store)
    await engine.jobs["myapp.send_welcome"].aenqueue(3)
    with caplog.at_level(logging.WARNING, logger="dispatch_core"):
        result = await engine.drain()
    assert (result.completed, ran) == (1, [3])
    assert store.calls == 1  # once, at the end; a drain runs no periodic check
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert message.startswith("drain finished, leaving 4 runnable jobs this engine has no handler")
    assert "'__main__.send_welcome' in 'emails' (2)" in message
    assert "'billing.charge' in 'default' (1)" in message
    assert "'reports.build' in 'reports' (1)" in message
    assert "It runs: myapp.send_welcome." in message


async def test_drain_of_some_queues_names_only_theirs(caplog: pytest.LogCaptureFixture) -> None:
    store = CountingStore()
    await producer_jobs(store)
    engine, _ = worker_app(store)
    with caplog.at_level(logging.WARNING, logger="dispatch_core"):
        await engine.drain(queues=["reports"])
    [message] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "leaving 1 runnable job " in message
    assert "'reports.build' in 'reports' (1)" in message


async def test_drain_with_every_job_handled_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    engine, ran = worker_app(CountingStore())
    await engine.jobs["myapp.send_welcome"].aenqueue(1)
    with caplog.at_level(logging.WARNING, logger="dispatch_core"):
        await engine.drain()
    assert ran == [1]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- failure logging -------------------------------------------------------------------------------


def job_records(caplog: pytest.LogCaptureFixture, job_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if job_id in r.getMessage()]


async def test_a_retry_is_info_and_a_dead_letter_is_a_warning_with_the_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine(MemoryStore())

    @engine.job(name="flaky.charge", max_retries=1)
    async def charge(n: int) -> None:
        raise ValueError(f"card declined {n}")

    job = await charge.aenqueue(5)
    with caplog.at_level(logging.INFO, logger="dispatch_core"):
        await engine.drain()
    retry, dead = job_records(caplog, job.id)
    assert retry.levelno == logging.INFO
    assert retry.name == "dispatch_core.job"
    assert retry.getMessage().startswith(
        f"job {job.id} (flaky.charge) attempt 1/2 failed: ValueError('card declined 5'); "
        "retrying in 0.0s (at "
    )
    assert (retry.job_id, retry.attempt) == (job.id, 1)  # type: ignore[attr-defined]
    assert dead.levelno == logging.WARNING
    text = dead.getMessage()
    assert text.startswith(
        f"job {job.id} (flaky.charge) failed for good on attempt 2/2 (no attempts left) and "
        "was dead-lettered: ValueError: card declined 5"
    )
    assert "Traceback (most recent call last):" in text
    assert 'raise ValueError(f"card declined {n}")' in text  # the handler's own line
    assert "middleware.py" not in text  # without Dispatch's frames
    stored = await engine.aget_job(job.id)
    assert stored.state is JobState.FAILED
    assert stored.last_error is not None
    assert text.endswith(stored.last_error)


async def test_timeouts_and_fail_job_are_dead_letter_warnings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine(MemoryStore())

    @engine.job(name="slow", max_retries=0, timeout=0.05)
    async def slow() -> None:
        await asyncio.sleep(10)

    @engine.job(name="refuse", max_retries=5)
    async def refuse(ctx: JobContext) -> None:
        try:
            raise KeyError("no such account")
        except KeyError as exc:
            raise FailJob("account gone") from exc

    timed, refused = await slow.aenqueue(), await refuse.aenqueue()
    with caplog.at_level(logging.INFO, logger="dispatch_core"):
        await engine.drain()
    [t] = job_records(caplog, timed.id)
    assert t.levelno == logging.WARNING
    assert "failed for good on attempt 1/1 (no attempts left)" in t.getMessage()
    assert "JobTimeoutError: job slow timed out after 0.05s" in t.getMessage()
    [r] = job_records(caplog, refused.id)
    assert r.levelno == logging.WARNING
    assert "failed for good on attempt 1/6 (it raised FailJob)" in r.getMessage()
    assert "KeyError: 'no such account'" in r.getMessage()
    assert "Traceback (most recent call last):" in r.getMessage()


async def test_a_job_rescued_with_no_attempts_left_is_a_dead_letter_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine(MemoryStore())

    @engine.job(name="fragile", max_retries=0)
    async def fragile(n: int) -> None: ...

    job = await fragile.aenqueue(1)
    await engine.aopen()
    old = utcnow() - timedelta(seconds=60)
    dead = WorkerInfo(
        id="wkr_dead",
        hostname="gone",
        pid=1,
        queues=None,
        concurrency=1,
        version="0",
        started_at=old,
        last_seen=old,
    )
    await engine.store.register_worker(dead)
    await engine.store.claim(
        worker_id=dead.id, queues=None, names=None, limit=1, lease_seconds=600, now=utcnow()
    )
    w = engine.worker(**FAST)
    with caplog.at_level(logging.WARNING, logger="dispatch_core"):
        task = asyncio.ensure_future(w.run())

        async def failed() -> bool:
            return (await engine.aget_job(job.id)).state is JobState.FAILED

        await wait_for(failed, "the rescue")
        w.stop(grace=1)
        await asyncio.wait_for(task, 5)
    [r] = job_records(caplog, job.id)
    assert r.levelno == logging.WARNING
    assert (r.name, r.job_id) == ("dispatch_core.job", job.id)  # type: ignore[attr-defined]
    assert (
        f"job {job.id} (fragile) failed for good on attempt 1/1 (worker {w.id} took it back"
        in r.getMessage()
    )
    # the stored error: a crash reads as a crash
    assert "was dead-lettered: worker wkr_dead died: it sent no heartbeat" in r.getMessage()


async def test_success_logs_nothing_at_info(caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(MemoryStore())

    @engine.job(name="fine")
    async def fine(n: int) -> int:
        return n

    job = await fine.aenqueue(1)
    with caplog.at_level(logging.INFO, logger="dispatch_core.job"):
        await engine.drain()
    assert job_records(caplog, job.id) == []
    assert [r for r in caplog.records if r.name == "dispatch_core.job"] == []


# -- dispatch jobs counts ------------------------------------------------------------------------


@pytest.fixture
def cliapp(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``cliapp_memory`` imported afresh: a new engine and an empty memory store."""
    for var in ("DISPATCH_APP", "DISPATCH_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.syspath_prepend(str(HERE))
    sys.modules.pop("cliapp_memory", None)
    yield importlib.import_module("cliapp_memory")
    sys.modules.pop("cliapp_memory", None)


def run(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


async def _enqueue_strays(engine: Engine) -> None:
    await engine.aopen()
    await producer_jobs(engine.store)  # type: ignore[arg-type]


def test_jobs_counts_lists_unhandled_jobs(cliapp: ModuleType) -> None:
    engine: Engine = cliapp.engine
    asyncio.run(_enqueue_strays(engine))
    cliapp.add.enqueue(1)
    out = run("jobs", "counts", "--app", "cliapp_memory:engine").stdout
    states, _, rest = out.partition("\n\n")
    assert "pending        5" in states
    lines = rest.splitlines()
    assert lines[0] == "Runnable, but no running worker takes them:"
    assert [line.split() for line in lines[1:6]] == [
        ["QUEUE", "NAME", "COUNT"],
        ["default", "billing.charge", "1"],
        ["default", "cliapp.add", "1"],  # no worker runs at all
        ["emails", "__main__.send_welcome", "2"],
        ["reports", "reports.build", "1"],
    ]
    assert lines[6].startswith("A worker claims only the job names its app registers")

    data = json.loads(run("jobs", "counts", "--json", "--app", "cliapp_memory:engine").stdout)
    assert data["pending"] == 5
    assert data["unhandled"] == [
        {"queue": "default", "name": "billing.charge", "count": 1},
        {"queue": "default", "name": "cliapp.add", "count": 1},
        {"queue": "emails", "name": "__main__.send_welcome", "count": 2},
        {"queue": "reports", "name": "reports.build", "count": 1},
    ]
    one = json.loads(
        run("jobs", "counts", "-q", "emails", "--json", "--app", "cliapp_memory:engine").stdout
    )
    assert one["unhandled"] == [{"queue": "emails", "name": "__main__.send_welcome", "count": 2}]


def test_jobs_counts_without_unhandled_jobs_prints_only_the_states(cliapp: ModuleType) -> None:
    out = run("jobs", "counts", "--app", "cliapp_memory:engine").stdout
    assert "Runnable" not in out
    assert out.splitlines()[-1].split() == ["total", "0"]
    assert (
        json.loads(run("jobs", "counts", "--json", "--app", "cliapp_memory:engine").stdout)[
            "unhandled"
        ]
        == []
    )


# -- a real worker process -----------------------------------------------------------------------


def test_a_worker_process_warns_and_counts_show_the_job(tmp_path: Path) -> None:
    pytest.importorskip("dispatch_plugins.sqlite")
    url = f"sqlite:///{tmp_path}/jobs.db"
    producer = Engine(url)

    @producer.job(name="__main__.slow", queue="default")
    def stray(seconds: float) -> None: ...

    stray.enqueue(1.0)
    producer.close()
    env = {**os.environ, "DISPATCH_URL": url, "PYTHONUNBUFFERED": "1"}
    env.pop("DISPATCH_APP", None)
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [str(DISPATCH), "worker", "cliapp_worker:engine", "--unhandled-check-interval", "0.2"],
            cwd=HERE,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    try:
        deadline = time.monotonic() + 30
        while "'__main__.slow'" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no warning within 30s:\n" + log.read_text()
            time.sleep(0.05)
        counts = subprocess.run(
            [str(DISPATCH), "jobs", "counts", "--url", url, "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert counts.returncode == 0, counts.stderr
        assert json.loads(counts.stdout)["unhandled"] == [
            {"queue": "default", "name": "__main__.slow", "count": 1}
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    [line] = [ln for ln in text.splitlines() if "'__main__.slow'" in ln]
    assert " WARNING " in line
    assert "1 runnable job named '__main__.slow' waits in queue 'default'" in line
    assert "This worker runs: cliapp.slow." in line
    assert "aliases=['__main__.slow'] to cliapp.slow" in line
