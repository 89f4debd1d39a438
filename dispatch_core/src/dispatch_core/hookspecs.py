"""Hook specifications: every hook a Dispatch plugin may implement.

Plugins implement hooks with :data:`dispatch_core.hookimpl` and register through the
``dispatch_core.plugins`` entry-point group. Three kinds of hook exist:

* **Registration hooks** (``dispatch_register_*``, ``dispatch_configure_converter``,
  ``dispatch_add_hookspecs``, ``dispatch_remote_operations``) are called synchronously while an
  engine or the CLI is built (``dispatch_remote_operations`` when a command is given an
  ``http(s)://`` ``--url``). They must be plain functions.
* **The producer hook** (``dispatch_job_enqueuing``) is called synchronously, in the caller's
  thread and context, just before new jobs are written: the place to stamp headers (trace
  context) on them. It must be a plain function and must be quick.
* **Lifecycle hooks** (``dispatch_job_*``, ``dispatch_workflow_*``, ``dispatch_cron_fired``,
  ``dispatch_engine_*``) are notifications. They may be ``async def``. The engine calls them
  out of band, after the state change is stored: each implementation is awaited on its own,
  under a timeout, and its exceptions are logged and swallowed, so a slow or failing plugin
  never blocks or fails a job. Their return values are ignored. Wrappers
  (``wrapper=True``/``hookwrapper=True``) are not supported on lifecycle hooks; use
  middleware to wrap job execution.

Every lifecycle hook may take ``engine``; pluggy passes only the arguments an implementation
names, so implementations list just what they need.

A plugin that calls hooks of its own specifies them in its own module and adds them with
``dispatch_add_hookspecs``: dispatch-admin's ``dispatch_register_routes`` is one (its
specification is in ``dispatch_plugins.admin.hookspecs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

import pluggy

if TYPE_CHECKING:
    import cattrs
    import click

    from dispatch_core.engine import Engine
    from dispatch_core.middleware import MiddlewareRegistry
    from dispatch_core.models import Job, NewJob
    from dispatch_core.registry import StoreRegistry

__all__ = ["hookspec", "hookimpl", "PROJECT_NAME", "LIFECYCLE_HOOKS", "LifecycleHook"]

PROJECT_NAME = "dispatch"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ---------------------------------------------------------------------------------------------
# Registration hooks (sync)
# ---------------------------------------------------------------------------------------------


@hookspec(historic=True)
def dispatch_add_hookspecs(pluginmanager: pluggy.PluginManager) -> None:
    """Add the specifications of hooks a plugin calls itself.

    Called as each plugin registers (a historic hook: plugins registered later are called
    too), before the plugin manager checks that every implemented hook is specified. Call
    ``pluginmanager.add_hookspecs(module)``, and only for a spec not yet there
    (``pluginmanager.hook`` has no attribute of its name, or that hook caller's
    ``has_spec()`` is false), since several engines or a test may load the plugin again. Must
    not be ``async``.

    Args:
        pluginmanager: The engine's (or the CLI's) plugin manager.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_register_stores(registry: StoreRegistry) -> None:
    """Register store backends under URL schemes.

    Called once per engine (and by the CLI) before the store URL is resolved. Call
    ``registry.add(scheme, factory)``; ``factory(url)`` returns an unopened
    :class:`~dispatch_core.store.Store`. Must not be ``async``.

    Args:
        registry: The engine's store registry.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_register_middleware(registry: MiddlewareRegistry) -> None:
    """Contribute job middleware.

    Called once per engine. Call ``registry.add(name, middleware, order=...)``; a
    middleware is ``async def mw(ctx, call_next)``. Must not be ``async``.

    Args:
        registry: The engine's middleware registry.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_configure_converter(converter: cattrs.Converter) -> None:
    """Teach the engine's cattrs converter about payload types (register hooks on it).

    Called once per engine, before any job is registered. Must not be ``async``.

    Args:
        converter: The engine's private converter (based on ``cattrs.preconf.json``).

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``dispatch`` command line.

    Called once when the CLI starts. Must not be ``async``.

    Args:
        cli: The root ``dispatch`` click group.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_register_jobs(engine: Engine) -> None:
    """Define jobs a plugin needs (a webhook delivery job...) on a new engine.

    Called once per engine, at the end of its construction, so the jobs exist in every
    process that builds the engine: producers and workers alike. Call ``engine.job(...)``.
    Name such jobs under the plugin's own prefix (``webhooks.deliver``). Must not be ``async``.

    Args:
        engine: The engine being built.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def dispatch_remote_operations(url: str, token: str | None) -> Any:
    """Open a client for a remote Dispatch admin API (used by dispatch-admin).

    The CLI calls this when ``--url`` is an ``http://`` or ``https://`` address; the first
    plugin that returns something wins. The object returned offers the engine's operator
    methods (``alist_jobs``, ``aretry``, ``alist_dlq``, ``areplay_dlq``, ``acron_entries``,
    ``aworkers``...) with the engine's signatures and return types, plus ``aclose``, so every
    ``dispatch jobs / dlq / cron / workflows / queues / workers`` command works against it.

    Args:
        url: Where the admin app is mounted, e.g. ``https://ops.example.com/dispatch``.
        token: The bearer token (the CLI reads it from ``DISPATCH_TOKEN``), or ``None``.

    Returns:
        The client, or ``None`` when this plugin does not handle ``url``.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# Producer (sync, in band)
# ---------------------------------------------------------------------------------------------


@hookspec
def dispatch_job_enqueuing(
    jobs: Sequence[NewJob], engine: Engine
) -> AbstractContextManager[None] | None:
    """Prepare jobs about to be written: stamp headers on them, and optionally wrap the write.

    Called synchronously, in the caller's thread and context (so ``contextvars`` such as the
    current trace span are the caller's), just before the engine writes new jobs: on
    ``enqueue``/``enqueue_many`` (one call for the batch), on a cron fire or trigger (the job's
    headers hold ``dispatch-cron``), and for a workflow's driver jobs (named
    ``dispatch.workflow``) when a run starts, parks or is woken.

    An implementation may add entries to each job's ``headers`` dict; they are stored with the
    job and given back to the worker as ``ctx.job.headers``. It may also return a context
    manager: the engine enters it before the write and exits it after, with the exception if
    the write failed. An exception raised here is logged and ignored; it never stops an
    enqueue. Implementations must be plain, quick functions: they run on every enqueue.

    Args:
        jobs: The jobs about to be written (one, or a batch).
        engine: The engine.

    Returns:
        ``None``, or a context manager to hold open around the write.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# Engine lifecycle
# ---------------------------------------------------------------------------------------------


@hookspec
def dispatch_engine_started(engine: Engine) -> None:
    """Notify that an engine opened its store and is ready. ``async def`` allowed.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_engine_shutdown(engine: Engine) -> None:
    """Notify that an engine is closing (workers stopped, store about to close).
    ``async def`` allowed.

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# Job lifecycle (out of band; async def allowed; exceptions are logged and swallowed)
# ---------------------------------------------------------------------------------------------


@hookspec
def dispatch_job_enqueued(job: Job, engine: Engine) -> None:
    """Notify that a job was written to the store (producer side).

    Not called for ``enqueue(..., conn=...)``: that job lives in the caller's transaction,
    which may still roll back.

    Args:
        job: The stored job (for a duplicate ``unique_key``, the existing job is not re-sent).
        engine: The engine.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_job_started(job: Job, engine: Engine) -> None:
    """Notify that a worker began an attempt (``job.attempt`` is its number).

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_job_completed(job: Job, elapsed: float, engine: Engine) -> None:
    """Notify that an attempt succeeded and the job is completed.

    Args:
        job: The job, state ``completed``, with its ``result``.
        elapsed: Seconds the handler ran.
        engine: The engine.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_job_failed(job: Job, error: str, engine: Engine) -> None:
    """Notify that a job failed for good (no attempts left). ``dispatch_job_dead_lettered``
    follows.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_job_retrying(job: Job, attempt: int, next_run_at: datetime, engine: Engine) -> None:
    """Notify that an attempt failed and the job will run again at ``next_run_at``.

    Args:
        job: The job, state ``retrying``, with ``last_error``.
        attempt: The number of the attempt that failed.
        next_run_at: When the next attempt may start.
        engine: The engine.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_job_dead_lettered(job: Job, error: str, engine: Engine) -> None:
    """Notify that a failed job was copied to the dead-letter queue.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_job_rescued(job: Job, engine: Engine) -> None:
    """Notify that the leader took back a job whose worker died or whose lease expired.

    ``job`` is as stored after the rescue: ``retrying`` (it will run again; a
    ``dispatch_job_retrying`` follows) or ``failed`` (no attempts left; ``dispatch_job_failed``
    and ``dispatch_job_dead_lettered`` follow).

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# Workflow lifecycle
# ---------------------------------------------------------------------------------------------


@hookspec
def dispatch_workflow_started(run: Any, engine: Engine) -> None:
    """Notify that a workflow run started.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_workflow_step_completed(
    run: Any, step_name: str, elapsed: float, engine: Engine
) -> None:
    """Notify that a workflow step completed and was checkpointed.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_workflow_step_failed(run: Any, step_name: str, error: str, engine: Engine) -> None:
    """Notify that a workflow step raised.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_workflow_completed(run: Any, elapsed: float, engine: Engine) -> None:
    """Notify that a workflow run completed.

    .. versionadded:: 0.1
    """


@hookspec
def dispatch_workflow_failed(run: Any, error: str, engine: Engine) -> None:
    """Notify that a workflow run failed (after its compensations ran).

    .. versionadded:: 0.1
    """


# ---------------------------------------------------------------------------------------------
# Cron
# ---------------------------------------------------------------------------------------------


@hookspec
def dispatch_cron_fired(entry_name: str, job_id: str, engine: Engine) -> None:
    """Notify that the leader fired a cron entry and enqueued ``job_id``.

    .. versionadded:: 0.1
    """


#: The name of a lifecycle (notification) hook: what ``engine.hooks.emit`` and ``wants`` take,
#: so that mypy refuses a misspelled name before the runtime check does.
LifecycleHook = Literal[
    "dispatch_engine_started",
    "dispatch_engine_shutdown",
    "dispatch_job_enqueued",
    "dispatch_job_started",
    "dispatch_job_completed",
    "dispatch_job_failed",
    "dispatch_job_retrying",
    "dispatch_job_dead_lettered",
    "dispatch_job_rescued",
    "dispatch_workflow_started",
    "dispatch_workflow_step_completed",
    "dispatch_workflow_step_failed",
    "dispatch_workflow_completed",
    "dispatch_workflow_failed",
    "dispatch_cron_fired",
]

#: Names of the lifecycle (notification) hooks, in catalogue order.
LIFECYCLE_HOOKS: tuple[LifecycleHook, ...] = get_args(LifecycleHook)
