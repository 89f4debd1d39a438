"""The :class:`Relay` plugin: lifecycle hooks in, one delivery job per endpoint out."""

from __future__ import annotations

import asyncio
import logging
import ssl
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs

from dispatch_core import (
    Backoff,
    Engine,
    ExponentialJitter,
    FailJob,
    Job,
    JobContext,
    WorkflowRun,
    hookimpl,
    tenant_scope,
)
from dispatch_plugins.webhooks import catalog
from dispatch_plugins.webhooks.delivery import Resolver, deliver, system_resolver
from dispatch_plugins.webhooks.endpoints import (
    Endpoint,
    check_unique_names,
    endpoints_from_config,
    read_config_file,
)
from dispatch_plugins.webhooks.errors import (
    AddressRefusedError,
    DeliveryRefusedError,
    RelayConfigError,
    UnknownEndpointError,
)
from dispatch_plugins.webhooks.events import Event, cron_event, job_event, workflow_event

__all__ = ["Relay", "Delivery", "DELIVER_JOB", "DEFAULT_BACKOFF", "check_delivery"]

log = logging.getLogger("dispatch_plugins.webhooks")

#: The name of the delivery job.
DELIVER_JOB = "webhooks.deliver"
#: Retry backoff of deliveries: exponential with full jitter, 10 s initial, one hour cap.
DEFAULT_BACKOFF: Backoff = ExponentialJitter(initial=10.0, max=3600.0)
#: Jobs whose events are never relayed: deliveries (no loops) and workflow driver jobs
#: (their runs have events of their own).
_SILENT_JOBS = frozenset({DELIVER_JOB, "dispatch.workflow"})
#: Seconds a delivery job may run beyond the attempt's own timeout before Dispatch stops it.
_JOB_TIMEOUT_MARGIN = 5.0


@attrs.frozen(kw_only=True)
class Delivery:
    """The payload of a ``webhooks.deliver`` job: the endpoint's name and the envelope. Never
    the secret: the worker looks it up in its own relay configuration."""

    endpoint: str
    event: dict[str, Any]


class Relay:
    """Delivers Dispatch events to webhook endpoints, as retried Dispatch jobs.

    Pass it to the engine, in producers and workers alike (each process sends the events it
    sees: the producer ``enqueued``, workers ``started``/``completed``..., the leader
    ``cron.fired``)::

        relay = Relay([Endpoint(name="ops", url="https://ops.example.com/hooks",
                                secret=os.environ["OPS_WEBHOOK_SECRET"])])
        engine = Engine("postgresql://...", plugins=[relay])

    Each event matched by an endpoint becomes one ``webhooks.deliver`` job on ``queue``, in the
    endpoint's tenant (no tenant for an operator endpoint); a failed attempt is retried with
    ``backoff`` and the job is dead-lettered after ``max_retries``. Run a worker on ``queue``.
    The delivery job is internal (the admin API never enqueues it), and before signing, the
    worker checks that the job holds a real event for its endpoint (:func:`check_delivery`).

    Args:
        endpoints: The receivers (names must be unique).
        queue: The queue of the delivery jobs.
        max_retries: Retries after the first attempt before a delivery is dead-lettered.
        timeout: Seconds one attempt may take in all (resolution, connection, request,
            response headers).
        connect_timeout: Seconds the connection may take.
        backoff: Wait between attempts (default :data:`DEFAULT_BACKOFF`).
        resolver: Resolves endpoint hosts (default: the system resolver); for custom DNS
            and tests.
        ssl_context: Verifies HTTPS receivers, e.g. with your private CA (default: httpx's
            CA bundle, certifi). Certificates are always checked against the
            endpoint's host name.

    Raises:
        RelayConfigError: an invalid option or two endpoints with the same name.
    """

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        *,
        queue: str = "webhooks",
        max_retries: int = 8,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        backoff: Backoff | None = None,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        check_unique_names(self.endpoints)
        if not isinstance(queue, str) or not queue:
            raise RelayConfigError("relay: queue must be a non-empty string")
        if max_retries < 0:
            raise RelayConfigError(f"relay: max_retries must be >= 0, got {max_retries}")
        if timeout <= 0 or connect_timeout <= 0:
            raise RelayConfigError("relay: timeout and connect_timeout must be > 0 seconds")
        self.queue = queue
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.backoff = DEFAULT_BACKOFF if backoff is None else backoff
        self._resolver = resolver or system_resolver
        self._ssl_context = ssl_context
        self._by_name = {e.name: e for e in self.endpoints}
        # The loop each engine is open on: hooks running there enqueue directly; hooks on
        # the engine's private loop (sync producers) go through the blocking API.
        self._loops: weakref.WeakKeyDictionary[Engine, asyncio.AbstractEventLoop] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"<Relay queue={self.queue!r} endpoints={sorted(self._by_name)}>"

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> Relay:
        """A relay from a decoded JSON configuration: a list of endpoints, or an object with
        ``"endpoints"`` and, optionally, ``"queue"``, ``"max_retries"``, ``"timeout"`` and
        ``"connect_timeout"``. See
        :func:`~dispatch_plugins.webhooks.endpoints.endpoints_from_config`.
        """
        options: dict[str, Any] = {}
        if isinstance(config, dict):
            extra = sorted(set(config) - {"endpoints", *_CONFIG_OPTIONS})
            if extra:
                raise RelayConfigError(f"relay configuration: unknown fields {extra}")
            options = {k: config[k] for k in _CONFIG_OPTIONS if k in config}
        try:
            return cls(endpoints_from_config(config), **{**options, **overrides})
        except TypeError as exc:
            raise RelayConfigError(f"relay configuration: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> Relay:
        """A relay from a JSON file (the format of :meth:`from_config`); errors name the
        file."""
        config = read_config_file(path)
        try:
            return cls.from_config(config, **overrides)
        except RelayConfigError as exc:
            raise RelayConfigError(f"relay configuration {str(path)!r}: {exc}") from None

    # -- registration ----------------------------------------------------------------------------

    @hookimpl
    def dispatch_register_jobs(self, engine: Engine) -> None:
        """Define ``webhooks.deliver`` on ``engine`` (once)."""
        existing = engine.jobs.get(DELIVER_JOB)
        if existing is not None:
            if getattr(existing.fn, "__self__", None) is self:
                return
            raise RelayConfigError(
                f"job {DELIVER_JOB!r} is already defined on this engine: give an engine one Relay"
            )
        engine.job(
            name=DELIVER_JOB,
            queue=self.queue,
            max_retries=self.max_retries,
            timeout=self.timeout + _JOB_TIMEOUT_MARGIN,
            backoff=self.backoff,
            # Its payload chooses what is signed with an endpoint's secret: never from outside.
            internal=True,
        )(self._deliver)

    async def _deliver(self, ctx: JobContext, delivery: Delivery) -> dict[str, Any]:
        endpoint = self._by_name.get(delivery.endpoint)
        if endpoint is None:
            # Retried: during a deploy, a producer may know an endpoint this worker does not.
            # Nothing is signed.
            raise UnknownEndpointError(
                f"endpoint {delivery.endpoint!r} is not configured in this worker's relay "
                f"(configured: {sorted(self._by_name)})"
            )
        try:
            check_delivery(endpoint, delivery.event, job_tenant=ctx.tenant)
        except DeliveryRefusedError as exc:
            raise FailJob(str(exc)) from exc
        try:
            status = await deliver(
                endpoint,
                delivery.event,
                timeout=self.timeout,
                connect_timeout=self.connect_timeout,
                resolver=self._resolver,
                ssl_context=self._ssl_context,
            )
        except AddressRefusedError as exc:
            raise FailJob(str(exc)) from exc
        return {"endpoint": endpoint.name, "status": status}

    # -- routing -------------------------------------------------------------------------------

    def _targets(self, event_type: str, tenant: str | None) -> list[Endpoint]:
        return [e for e in self.endpoints if e.wants(event_type, tenant)]

    async def _publish(self, engine: Engine, event: Event, targets: Sequence[Endpoint]) -> None:
        if not targets:
            return
        if DELIVER_JOB not in engine.jobs:
            log.error(
                "relay: %s has no %s job (register the Relay with Engine(plugins=[...])); "
                "event %s dropped",
                engine,
                DELIVER_JOB,
                event.type,
            )
            return
        envelope = event.envelope()
        # A delivery lives in its endpoint's tenant: an operator endpoint's deliveries have no
        # tenant, so no tenant sees, cancels, replays or purges them.
        by_tenant: dict[str | None, list[Delivery]] = {}
        for target in targets:
            by_tenant.setdefault(target.tenant, []).append(
                Delivery(endpoint=target.name, event=envelope)
            )
        same_loop = self._loops.get(engine) is asyncio.get_running_loop()
        for tenant, payloads in by_tenant.items():
            # The scope is set explicitly, whatever scope this task inherited.
            with tenant_scope(tenant):
                if same_loop:
                    await engine.aenqueue_many(DELIVER_JOB, payloads, tenant=tenant)
                else:
                    # A sync producer's hooks run on the engine's private loop: use the
                    # blocking API from a thread rather than opening the store on this loop.
                    await asyncio.to_thread(
                        engine.enqueue_many, DELIVER_JOB, payloads, tenant=tenant
                    )

    async def _job(self, engine: Engine, event_type: str, job: Job, **extra: Any) -> None:
        if job.name in _SILENT_JOBS:
            return
        targets = self._targets(event_type, job.tenant)
        if targets:
            await self._publish(engine, job_event(event_type, job, **extra), targets)

    async def _run(self, engine: Engine, event_type: str, run: WorkflowRun, **extra: Any) -> None:
        targets = self._targets(event_type, run.tenant)
        if targets:
            await self._publish(engine, workflow_event(event_type, run, **extra), targets)

    # -- lifecycle hooks -------------------------------------------------------------------------

    @hookimpl
    def dispatch_engine_started(self, engine: Engine) -> None:
        """Remember the loop the engine is open on."""
        self._loops[engine] = asyncio.get_running_loop()

    @hookimpl
    def dispatch_engine_shutdown(self, engine: Engine) -> None:
        """Forget the engine's loop."""
        self._loops.pop(engine, None)

    @hookimpl
    async def dispatch_job_enqueued(self, job: Job, engine: Engine) -> None:
        """``dispatch.job.enqueued``."""
        await self._job(engine, catalog.JOB_ENQUEUED, job)

    @hookimpl
    async def dispatch_job_started(self, job: Job, engine: Engine) -> None:
        """``dispatch.job.started``."""
        await self._job(engine, catalog.JOB_STARTED, job)

    @hookimpl
    async def dispatch_job_completed(self, job: Job, elapsed: float, engine: Engine) -> None:
        """``dispatch.job.completed`` with ``elapsed_ms``."""
        await self._job(engine, catalog.JOB_COMPLETED, job, elapsed=elapsed)

    @hookimpl
    async def dispatch_job_failed(self, job: Job, error: str, engine: Engine) -> None:
        """``dispatch.job.failed`` with ``error``."""
        await self._job(engine, catalog.JOB_FAILED, job, error=error)

    @hookimpl
    async def dispatch_job_retrying(
        self, job: Job, attempt: int, next_run_at: datetime, engine: Engine
    ) -> None:
        """``dispatch.job.retrying`` with ``error`` and ``next_run_at``; ``attempt`` is the
        attempt that failed."""
        await self._job(
            engine,
            catalog.JOB_RETRYING,
            job,
            attempt=attempt,
            error=job.last_error or "",
            next_run_at=next_run_at,
        )

    @hookimpl
    async def dispatch_job_dead_lettered(self, job: Job, error: str, engine: Engine) -> None:
        """``dispatch.job.dlq`` with ``error``."""
        await self._job(engine, catalog.JOB_DLQ, job, error=error)

    @hookimpl
    async def dispatch_workflow_started(self, run: WorkflowRun, engine: Engine) -> None:
        """``dispatch.workflow.started``."""
        await self._run(engine, catalog.WORKFLOW_STARTED, run)

    @hookimpl
    async def dispatch_workflow_step_completed(
        self, run: WorkflowRun, step_name: str, elapsed: float, engine: Engine
    ) -> None:
        """``dispatch.workflow.step_completed`` with ``step_name`` and ``elapsed_ms``."""
        await self._run(
            engine, catalog.WORKFLOW_STEP_COMPLETED, run, step_name=step_name, elapsed=elapsed
        )

    @hookimpl
    async def dispatch_workflow_step_failed(
        self, run: WorkflowRun, step_name: str, error: str, engine: Engine
    ) -> None:
        """``dispatch.workflow.step_failed`` with ``step_name`` and ``error``."""
        await self._run(engine, catalog.WORKFLOW_STEP_FAILED, run, step_name=step_name, error=error)

    @hookimpl
    async def dispatch_workflow_completed(
        self, run: WorkflowRun, elapsed: float, engine: Engine
    ) -> None:
        """``dispatch.workflow.completed`` with ``elapsed_ms``."""
        await self._run(engine, catalog.WORKFLOW_COMPLETED, run, elapsed=elapsed)

    @hookimpl
    async def dispatch_workflow_failed(self, run: WorkflowRun, error: str, engine: Engine) -> None:
        """``dispatch.workflow.failed`` with ``error``."""
        await self._run(engine, catalog.WORKFLOW_FAILED, run, error=error)

    @hookimpl
    async def dispatch_cron_fired(self, entry_name: str, job_id: str, engine: Engine) -> None:
        """``dispatch.cron.fired`` (operator endpoints only: cron has no tenant)."""
        targets = self._targets(catalog.CRON_FIRED, None)
        if targets:
            await self._publish(engine, cron_event(catalog.CRON_FIRED, entry_name, job_id), targets)


def check_delivery(endpoint: Endpoint, envelope: Any, *, job_tenant: str | None) -> None:
    """Check that a delivery job holds a real event for ``endpoint``, before anything is signed.

    The relay makes a delivery only for an event the endpoint subscribes to, in the
    endpoint's tenant; a delivery job made any other way (a forged payload) fails one of these
    checks:

    - ``tenant``: the job's tenant is the endpoint's (``None`` for an operator endpoint);
    - ``event tenant``: the envelope's ``tenant`` (and its data's ``tenant``, when present) is
      the endpoint's tenant, for a tenant endpoint (an operator endpoint takes any tenant);
    - ``event type``: the envelope's ``type`` is in the catalogue and in the endpoint's filter.

    Raises:
        DeliveryRefusedError: a check failed; ``check`` names it.
    """
    name = endpoint.name
    if job_tenant != endpoint.tenant:
        owner = (
            "an operator endpoint, whose deliveries have no tenant"
            if endpoint.tenant is None
            else f"tenant {endpoint.tenant!r}'s endpoint"
        )
        raise DeliveryRefusedError(
            "tenant",
            f"the delivery job's tenant is {_shown(job_tenant)}, but endpoint {name!r} is {owner}",
        )
    if not isinstance(envelope, dict):
        raise DeliveryRefusedError("event type", "the event is not a JSON object")
    event_tenant = envelope.get("tenant")
    if event_tenant is not None and not isinstance(event_tenant, str):
        raise DeliveryRefusedError("event tenant", "the event's tenant is not a string or null")
    data = envelope.get("data")
    if isinstance(data, dict) and "tenant" in data and data["tenant"] != event_tenant:
        raise DeliveryRefusedError(
            "event tenant",
            f"the event's tenant {_shown(event_tenant)} and its data's tenant "
            f"{_shown(data['tenant'])} differ",
        )
    if endpoint.tenant is not None and event_tenant != endpoint.tenant:
        raise DeliveryRefusedError(
            "event tenant",
            f"endpoint {name!r} receives only tenant {endpoint.tenant!r}'s events; this event "
            f"is of tenant {_shown(event_tenant)}",
        )
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or event_type not in catalog.EVENT_TYPES:
        raise DeliveryRefusedError(
            "event type", f"{_shown(event_type)} is not an event type of the catalogue"
        )
    if not endpoint.wants(event_type, event_tenant):
        raise DeliveryRefusedError(
            "event type",
            f"endpoint {name!r} does not subscribe to {event_type!r} "
            f"(its events: {', '.join(endpoint.events)})",
        )


def _shown(value: Any) -> str:
    """A value from a delivery's payload, for an error message: escaped and cut short."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


#: Characters of a payload value an error message shows.
_SHOWN = 100
_CONFIG_OPTIONS = ("queue", "max_retries", "timeout", "connect_timeout")
