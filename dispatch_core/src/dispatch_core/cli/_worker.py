"""``dispatch worker APP``: run a worker in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

import attrs
import click

from dispatch_core.cli._common import APP_ENV, APP_REF, load_app, plural, redact_url
from dispatch_core.cli._format import echo_safely, settle_output, silence_stream
from dispatch_core.worker import Worker, WorkerStats

__all__ = ["LOG_LEVELS", "log_level_option", "logging_to_stderr", "worker"]

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]

#: The ``--log-level`` option of the long-running commands (``worker``, and ``serve`` from
#: dispatch-admin), so they name and check levels alike.
log_level_option = click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Logging level (logs go to stderr).",
)
_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_BANNER_JOBS = 6  # job names listed in the banner before "+N more"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes records to stderr. When the stream's reader is gone (a closed pipe), the stream
    is silenced, rather than logging's "--- Logging error ---" traceback being attempted on
    that same dead stream for every record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
        except Exception:  # a bad format string: logging's own report
            self.handleError(record)
            return
        try:
            self.stream.write(msg + self.terminator)
            self.stream.flush()
        except (OSError, ValueError):  # BrokenPipeError, EIO, a closed file
            silence_stream(self.stream)


@contextlib.contextmanager
def logging_to_stderr(level: str) -> Iterator[None]:
    """Log at ``level`` to stderr for the duration of the block, unless the application
    configured logging itself (then only the level is set). A stderr whose reader is gone
    is silenced, not fatal."""
    root = logging.getLogger()
    previous_level = root.level
    handler: logging.Handler | None = None
    if not root.handlers:
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level.upper())
    try:
        yield
    finally:
        root.setLevel(previous_level)
        if handler is not None:
            root.removeHandler(handler)


def _job_names(w: Worker) -> str:
    """``2 jobs (a, b)``: the registered job names, the first few listed."""
    names = sorted({d.name for d in w.engine.jobs.values()})
    shown = ", ".join(names[:_BANNER_JOBS])
    if len(names) > _BANNER_JOBS:
        shown += f", +{len(names) - _BANNER_JOBS} more"
    return plural(len(names), "job") + (f" ({shown})" if names else "")


def banner(w: Worker, burst: bool) -> str:
    """The one-line start banner: worker id, store, queues, concurrency and jobs."""
    queues = ",".join(w.queues) if w.queues else "*"
    mode = " in burst mode" if burst else ""
    return (
        f"Dispatch worker {w.id}{mode} | store {redact_url(w.engine.url)} | queues {queues} | "
        f"concurrency {w.concurrency} | {_job_names(w)}"
    )


def stats_line(w: Worker, stats: WorkerStats) -> str:
    """The one-line summary printed when the worker exits."""
    counts = ", ".join(f"{n} {k}" for k, n in attrs.asdict(stats).items())
    return f"Worker {w.id} stopped: {counts}."


class _StopOnSignal:
    """SIGINT/SIGTERM handling: the first signal stops gracefully, the second at once.

    It stops the worker before it says so, and the saying cannot fail: a stderr whose reader
    is gone (a closed pipe) once made the message raise before ``stop()``, and the worker
    ignored every signal until SIGKILL.
    """

    def __init__(self, w: Worker) -> None:
        self.worker = w
        self.received = 0

    def __call__(self, name: str) -> None:
        self.received += 1
        self.worker.stop()
        if self.received == 1:
            message = (
                f"{name}: stopping; running jobs get up to {self.worker.grace_period:g}s to "
                "finish (send again to stop now)"
            )
        else:
            message = f"{name}: stopping now; running jobs go back to the queue"
        echo_safely(message, err=True)


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, on_signal: Callable[[str], None]
) -> Callable[[], None]:
    """Route SIGINT/SIGTERM to ``on_signal(name)``; return a function that undoes it."""
    installed: list[tuple[signal.Signals, Any, bool]] = []
    for sig in _STOP_SIGNALS:
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            via_loop = True
        except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not main thread
            try:
                signal.signal(
                    sig, lambda s, _f: loop.call_soon_threadsafe(on_signal, signal.Signals(s).name)
                )
            except ValueError:  # not the main thread: no signal handling
                continue
            via_loop = False
        installed.append((sig, previous, via_loop))

    def restore() -> None:
        for sig, previous, via_loop in installed:
            if via_loop:
                loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)

    return restore


async def _run(w: Worker, burst: bool) -> WorkerStats:
    """Run the worker (or drain it) under our signal handlers; close the engine."""
    restore = _install_signal_handlers(asyncio.get_running_loop(), _StopOnSignal(w))
    try:
        if burst:
            return await w.drain(timeout=None)
        return await w.run(install_signal_handlers=False)
    finally:
        restore()
        await w.engine.aclose()


def _split_queues(queues: tuple[str, ...]) -> list[str] | None:
    """Queue names from repeated and comma-separated ``--queue`` values."""
    names = [q.strip() for spec in queues for q in spec.split(",") if q.strip()]
    return names or None


@click.command()
@click.argument("app", type=APP_REF, envvar=APP_ENV)
@click.option(
    "-q",
    "--queue",
    "queues",
    multiple=True,
    metavar="QUEUE",
    help="Take jobs from QUEUE; repeat or separate with commas. Default: every queue.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Jobs run at once.",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True),
    default=15.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a claim holds a job without a heartbeat.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="At shutdown, how long running jobs may finish before they are put back.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest idle wait between polls of the store.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Jobs claimed ahead of free slots (hides the store's round trip for short jobs).",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Seconds between heartbeats, which refresh the worker's row and its jobs' leases "
    "[default: 2, or a third of --lease if shorter].",
)
@click.option(
    "--worker-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Seconds without a heartbeat after which the leader declares a worker dead and "
    "rescues its jobs [default: 7, at least 3.5 heartbeats].",
)
@click.option(
    "--unhandled-check-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between checks for jobs waiting under a name no running worker registers "
    "(each such name is logged once, at WARNING).",
)
@click.option(
    "--no-lead",
    is_flag=True,
    help="Never become the leader (which rescues jobs, fires cron entries and prunes).",
)
@click.option("--burst", is_flag=True, help="Run until no job is runnable, then exit.")
@log_level_option
@click.option("--worker-id", metavar="ID", help="Stable worker id (default: a new wkr_... id).")
def worker(
    app: str,
    queues: tuple[str, ...],
    concurrency: int,
    lease: float,
    grace: float,
    poll_interval: float,
    prefetch: int,
    heartbeat: float | None,
    worker_timeout: float | None,
    unhandled_check_interval: float,
    no_lead: bool,
    burst: bool,
    log_level: str,
    worker_id: str | None,
) -> None:
    """Run a worker for the engine APP.

    APP is MODULE:ATTR naming an Engine, e.g. examples.demo_app:engine (env: DISPATCH_APP);
    the current directory is importable.

    SIGINT or SIGTERM stops the worker gracefully: it claims no more jobs and lets running
    ones finish within --grace; a second signal stops it at once (unfinished jobs go back
    to the queue without using an attempt). Prints a banner at start and the job counts
    at exit; if nobody reads stdout or stderr any more (a closed pipe), the worker goes on
    without them, and exits 0 after a clean stop all the same.
    """
    engine = load_app(app)
    w = engine.worker(
        queues=_split_queues(queues),
        concurrency=concurrency,
        lease_seconds=lease,
        grace_period=grace,
        poll_interval=poll_interval,
        worker_id=worker_id,
        prefetch=prefetch,
        heartbeat_interval=heartbeat,
        worker_timeout=worker_timeout,
        unhandled_check_interval=unhandled_check_interval,
        lead=not no_lead,
    )
    # Output is the worker's report, not its work: a reader that goes away (a closed pipe,
    # a log collector restarting) silences it, and neither keeps the worker up nor changes
    # its exit status, which tells a supervisor whether the worker itself stopped cleanly.
    with logging_to_stderr(log_level):
        echo_safely(banner(w, burst))
        stats = asyncio.run(_run(w, burst))
    echo_safely(stats_line(w, stats))
    _exit_despite_stuck_threads(w)


def _exit_despite_stuck_threads(w: Worker) -> None:
    """Exit now if sync handlers are still running in threads.

    Their jobs were already released (or timed out); Python would otherwise wait for those
    threads at exit, so a stuck handler would keep a stopped worker alive until SIGKILL.
    """
    stuck = w.busy_threads()
    if stuck:
        echo_safely(
            f"{plural(stuck, 'sync handler thread')} still running after shutdown; "
            "exiting without waiting for them (their jobs were put back).",
            err=True,
        )
        settle_output()
        os._exit(0)
