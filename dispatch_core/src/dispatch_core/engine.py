"""The :class:`Engine`: the object an application holds."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, Unpack, cast, overload

import cattrs
import pluggy

from dispatch_core._blocking import BlockingStore, no_running_loop
from dispatch_core._ids import new_id
from dispatch_core._naming import default_name
from dispatch_core._plugins import Hooks, make_plugin_manager
from dispatch_core._urls import redact_url
from dispatch_core.backoff import DEFAULT_BACKOFF, Backoff
from dispatch_core.context import JobContext
from dispatch_core.definition import _NO_PAYLOAD, JobDefinition
from dispatch_core.errors import (
    ConfigurationError,
    DispatchError,
    PayloadError,
    StoreUnavailableError,
    UnknownJobError,
)
from dispatch_core.middleware import Middleware, MiddlewareRegistry
from dispatch_core.models import (
    DLQEntry,
    DLQFilter,
    Job,
    JobFilter,
    NewJob,
    SortOrder,
    ThroughputBucket,
    utcnow,
)
from dispatch_core.producer import (
    EARLIEST_RUN_AT,
    LATEST_RUN_AT,
    EnqueueOptions,
    Producer,
)
from dispatch_core.registry import StoreRegistry
from dispatch_core.retention import Retention
from dispatch_core.scheduling import ClusterAPI
from dispatch_core.serde import make_converter, to_json_payload
from dispatch_core.states import JobState
from dispatch_core.store import Store
from dispatch_core.workflows.api import WorkflowAPI

if TYPE_CHECKING:
    from dispatch_core.worker import DrainResult, Worker

__all__ = ["Engine", "DEFAULT_QUEUE", "EARLIEST_RUN_AT", "LATEST_RUN_AT"]

log = logging.getLogger("dispatch_core.engine")
T = TypeVar("T")
P = TypeVar("P")


class JobDecorator(Protocol):
    """What ``@engine.job(...)`` with options returns: a decorator keeping the payload type."""

    @overload
    def __call__(self, fn: Callable[[JobContext], Any], /) -> JobDefinition[None]: ...

    @overload
    def __call__(self, fn: Callable[[JobContext, P], Any], /) -> JobDefinition[P]: ...

    @overload
    def __call__(self, fn: Callable[[P], Any], /) -> JobDefinition[P]: ...

    @overload
    def __call__(self, fn: Callable[[], Any], /) -> JobDefinition[None]: ...


DEFAULT_QUEUE = "default"
_DEFAULT_TIMEOUT = 300.0
_DEFAULT_RETENTION = Retention()


class Engine(ClusterAPI, WorkflowAPI):
    """Registers jobs, enqueues them and runs workers over one store.

    Args:
        store: A store URL (``sqlite:///jobs.db``, ``memory://``, ``postgresql://…``) or a
            :class:`~dispatch_core.store.Store`. Without one, ``DISPATCH_URL`` is read, then
            ``sqlite:///dispatch.db`` is used if dispatch-sqlite is installed.
        plugins: Plugin objects to register besides the entry-point plugins.
        load_entrypoints: Load plugins from the ``dispatch_core.plugins`` entry points.
        backoff: The default retry backoff (exponential with full jitter, 1 s to 60 s).
        middleware: User middleware, innermost, in order (outermost first).
        auto_migrate: Migrate the store's schema when the engine opens it.
        hook_timeout: Seconds one lifecycle-hook implementation may take.
        retention: How long the leader keeps finished jobs, dead-letter entries and worker
            rows (default :class:`~dispatch_core.retention.Retention`: completed jobs a day,
            failed and cancelled ones a week, dead letters 30 days); ``None`` keeps everything.

    Raises:
        StoreURLError: the URL is malformed or no installed plugin serves its scheme.
        PluginMissingError: the scheme's plugin is known but not installed.
    """

    def __init__(
        self,
        store: str | Store | None = None,
        *,
        plugins: Iterable[object] = (),
        load_entrypoints: bool = True,
        backoff: Backoff = DEFAULT_BACKOFF,
        middleware: Sequence[Middleware] = (),
        auto_migrate: bool = True,
        hook_timeout: float = 10.0,
        retention: Retention | None = _DEFAULT_RETENTION,
    ) -> None:
        self.pm: pluggy.PluginManager = make_plugin_manager(
            load_entrypoints=load_entrypoints, plugins=plugins
        )
        self.stores = StoreRegistry()
        self.pm.hook.dispatch_register_stores(registry=self.stores)
        if isinstance(store, Store):
            self.store = store
            self.url = getattr(store, "url", type(store).__name__)
        else:
            self.url = self._resolve_url(store)
            self.store = self.stores.create(self.url)
        # Only an engine built from a URL can make a second, private store instance (for the
        # blocking calls' own event loop); one given a Store object must share that object.
        self._built_from_url = not isinstance(store, Store)
        self.converter: cattrs.Converter = make_converter()
        self.pm.hook.dispatch_configure_converter(converter=self.converter)
        self.middleware = MiddlewareRegistry()
        self.pm.hook.dispatch_register_middleware(registry=self.middleware)
        for i, mw in enumerate(middleware):
            self.middleware.add(f"user.{i}", mw)
        self.backoff = backoff
        self.auto_migrate = auto_migrate
        self.hooks = Hooks(self.pm, timeout=hook_timeout)
        self._jobs: dict[str, JobDefinition[Any]] = {}
        self._open_loop: asyncio.AbstractEventLoop | None = None
        self._open_lock: asyncio.Lock | None = None
        self._open_lock_loop: asyncio.AbstractEventLoop | None = None
        #: Blocking calls' access to the store (its sync twin, or a portal).
        self.blocking = BlockingStore(self)
        #: The one write path of new jobs (core's internal API; see dispatch_core.producer).
        self.producer = Producer(self)
        self._init_cluster(retention)
        self._init_workflows()
        self.pm.hook.dispatch_register_jobs(engine=self)

    @property
    def safe_url(self) -> str:
        """The store URL with its password hidden, for logs and messages."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"<Engine {self.safe_url!r} jobs={sorted(self._jobs)}>"

    def _resolve_url(self, url: str | None) -> str:
        if url:
            return url
        env = os.environ.get("DISPATCH_URL")
        if env:
            return env
        if "sqlite" in self.stores.schemes():
            return "sqlite:///dispatch.db"
        raise ConfigurationError(
            "no store URL given and DISPATCH_URL is not set; pass one, e.g. "
            "Engine('postgresql://localhost/app'), or install the embedded default with: "
            "pip install dispatch-sqlite"
        )

    def register_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object after construction (lifecycle hooks only)."""
        self.pm.register(plugin, name=name)
        self.hooks.refresh()
        self.producer.refresh()

    @property
    def opened(self) -> bool:
        """Whether an event loop has the store open (``aopen``)."""
        return self._open_loop is not None

    def new_store(self) -> Store | None:
        """A second, unopened instance of the engine's store (same URL), for another event
        loop or thread; ``None`` when the engine was given a store object, which must then be
        shared."""
        return self.stores.create(self.url) if self._built_from_url else None

    # -- definitions -----------------------------------------------------------------------------

    # The payload type of the definition comes from the handler's signature, so
    # ``definition.enqueue(payload)`` is type-checked. A handler taking only a JobContext
    # overlaps the one-payload form; the order of the overloads settles it.
    @overload
    def job(self, fn: Callable[[JobContext], Any]) -> JobDefinition[None]: ...

    @overload
    def job(self, fn: Callable[[JobContext, P], Any]) -> JobDefinition[P]: ...

    @overload
    def job(self, fn: Callable[[P], Any]) -> JobDefinition[P]: ...

    @overload
    def job(self, fn: Callable[[], Any]) -> JobDefinition[None]: ...

    @overload
    def job(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_retries: int = 3,
        timeout: float | None = _DEFAULT_TIMEOUT,
        priority: int = 0,
        backoff: Backoff | None = None,
        aliases: Iterable[str] = (),
        internal: bool = False,
        operator_only: bool = False,
    ) -> JobDecorator: ...

    def job(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_retries: int = 3,
        timeout: float | None = _DEFAULT_TIMEOUT,
        priority: int = 0,
        backoff: Backoff | None = None,
        aliases: Iterable[str] = (),
        internal: bool = False,
        operator_only: bool = False,
    ) -> JobDefinition[Any] | JobDecorator:
        """Register a job handler; use as ``@engine.job`` or ``@engine.job(queue=...)``.

        The handler is an ``async def`` or a plain ``def`` (run in a thread pool) taking one
        typed payload and, optionally, a parameter annotated :class:`JobContext`.

        Args:
            name: The stable name stored with each job (default: ``module.qualname``, the
                module named as a worker imports it, also for a script run as ``__main__``).
            queue: Default queue.
            max_retries: Retries after the first attempt (default 3: four attempts).
            timeout: Seconds an attempt may run (default 300); ``None`` for no limit.
            priority: Default priority; higher runs first.
            backoff: Retry backoff for this job (default: the engine's).
            aliases: Older names still accepted from the store (for renames).
            internal: The job is the engine's or a plugin's own (the workflow driver, webhook
                deliveries): code in the process enqueues it (``definition.enqueue``, or
                ``engine.enqueue`` by name), but it is never enqueued from outside: the admin
                API answers its name, for every token, as it answers a name it does not know.
                Set it for a job whose payload the outside must not choose.
            operator_only: Only operators may enqueue the job from outside: the admin API
                refuses it to tokens bound to a tenant (the job of every cron entry counts as
                operator-only too). In-process code is not affected.
        """

        def register(f: Callable[..., Any]) -> JobDefinition[Any]:
            job_name = name or default_name(f)
            definition: JobDefinition[Any] = JobDefinition(
                engine=self,
                fn=f,
                name=job_name,
                queue=queue,
                max_retries=max_retries,
                timeout=timeout,
                priority=priority,
                backoff=backoff,
                aliases=aliases,
                internal=internal,
                operator_only=operator_only,
            )
            for key in (job_name, *definition.aliases):
                existing = self._jobs.get(key)
                if existing is not None and existing.fn is not f:
                    raise ConfigurationError(
                        f"job name {key!r} is already registered by {existing.fn.__qualname__}"
                    )
                self._jobs[key] = definition
            return definition

        return register(fn) if fn is not None else cast(JobDecorator, register)

    @property
    def jobs(self) -> dict[str, JobDefinition[Any]]:
        """Registered jobs by name (aliases included)."""
        return dict(self._jobs)

    def get_definition(self, name: str) -> JobDefinition[Any]:
        """The definition registered under ``name``.

        Raises:
            UnknownJobError: no job has that name; the message lists the registered ones.
        """
        try:
            return self._jobs[name]
        except KeyError:
            raise UnknownJobError(name, list(self._jobs)) from None

    # -- store lifecycle --------------------------------------------------------------------------

    async def aopen(self) -> None:
        """Open the store (migrating it when ``auto_migrate``); idempotent per event loop.

        Raises:
            StoreUnavailableError: the store cannot be reached or opened; the message says why.
        """
        await self._ensure_open(migrate=self.auto_migrate)

    async def _ensure_open(self, *, migrate: bool) -> None:
        loop = asyncio.get_running_loop()
        if self._open_loop is loop:
            return
        if self._open_lock is None or self._open_lock_loop is not loop:
            self._open_lock = asyncio.Lock()
            self._open_lock_loop = loop
        async with self._open_lock:
            if self._open_loop is loop:
                return
            if self._open_loop is not None:
                # A previous asyncio.run() left connections bound to a dead loop.
                await self._close_store_quietly()
            try:
                await self.store.open()
                if migrate:
                    await self.store.migrate()
            except StoreUnavailableError:
                raise
            except Exception as exc:
                raise StoreUnavailableError(f"cannot open store {self.safe_url}: {exc}") from exc
            self._open_loop = loop
        self.hooks.emit("dispatch_engine_started", engine=self)

    async def aclose(self) -> None:
        """Flush lifecycle hooks and close the store."""
        if self._open_loop is None:
            return
        self.hooks.emit("dispatch_engine_shutdown", engine=self)
        await self.hooks.aclose()
        await self._close_store_quietly()
        self._open_loop = None

    async def _close_store_quietly(self) -> None:
        try:
            await self.store.close()
        except Exception:
            log.exception("closing store %s failed", self.safe_url)

    def close(self) -> None:
        """Release sync resources (the sync producer, the portal thread, the thread pool)."""
        self.blocking.close()

    async def __aenter__(self) -> Engine:
        await self.aopen()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def amigrate(self) -> list[str]:
        """Migrate the store's schema; return the names of the migrations applied.

        Raises:
            StoreUnavailableError: the store cannot be opened or migrated.
        """
        await self._ensure_open(migrate=False)
        try:
            applied = await self.store.migrate()
        except DispatchError:
            raise
        except Exception as exc:
            raise StoreUnavailableError(f"migrating store {self.safe_url} failed: {exc}") from exc
        return applied

    # -- enqueue -----------------------------------------------------------------------------------

    def _definition_of(self, job: JobDefinition[Any] | str) -> JobDefinition[Any]:
        if isinstance(job, JobDefinition):
            if self._jobs.get(job.name) is not job:
                raise UnknownJobError(job.name, list(self._jobs))
            return job
        return self.get_definition(job)

    def _prepare(
        self, job: JobDefinition[Any] | str, payload: Any, options: Mapping[str, Any]
    ) -> NewJob:
        definition = self._definition_of(job)
        if payload is _NO_PAYLOAD:
            if definition.takes_payload:
                raise PayloadError(definition.name, ["required payload missing @ $"])
            payload = None
        elif not definition.takes_payload and payload is not None:
            raise PayloadError(definition.name, ["this job takes no payload @ $"])
        raw = to_json_payload(self.converter, definition.name, definition.payload_type, payload)
        return self.producer.new_job(definition, raw, **options)

    async def aenqueue(
        self,
        job: JobDefinition[Any] | str,
        payload: Any = _NO_PAYLOAD,
        *,
        conn: Any = None,
        **options: Unpack[EnqueueOptions],
    ) -> Job:
        """Enqueue one job by definition or name (async). See :meth:`JobDefinition.enqueue`.

        A ``unique_key`` (and a chosen ``job_id``) dedupes within the job's tenant: the job of
        the same tenant that holds it is returned, never another tenant's.

        Raises:
            UnknownJobError: ``job`` is not registered.
            PayloadError: the payload does not fit; nothing was written.
            JobIdTakenError: ``job_id`` is the id of another tenant's job (ids are global);
                nothing was written.
            ValueError: an option is invalid, e.g. a ``run_at`` or ``delay`` outside
                1970-01-01 to 2200-01-01 (UTC); nothing was written.
        """
        new = self._prepare(job, payload, options)
        await self.aopen()
        return (await self.producer.write([new], conn=conn))[0]

    async def aenqueue_many(
        self,
        job: JobDefinition[Any] | str,
        payloads: Iterable[Any],
        **options: Unpack[EnqueueOptions],
    ) -> list[Job]:
        """Enqueue many jobs in one transaction (async); all are validated first."""
        now = utcnow()
        if "job_id" in options:
            raise ValueError("job_id names one job: it cannot be given to enqueue_many")
        new = [self._prepare(job, p, {**options, "now": now}) for p in payloads]
        if not new:
            return []
        await self.aopen()
        return await self.producer.write(new)

    def enqueue(
        self,
        job: JobDefinition[Any] | str,
        payload: Any = _NO_PAYLOAD,
        *,
        conn: Any = None,
        **options: Unpack[EnqueueOptions],
    ) -> Job:
        """Blocking twin of :meth:`aenqueue`, for code without an event loop."""
        no_running_loop("enqueue", "aenqueue")
        new = self._prepare(job, payload, options)
        return self.producer.write_blocking([new], conn=conn)[0]

    def enqueue_many(
        self,
        job: JobDefinition[Any] | str,
        payloads: Iterable[Any],
        **options: Unpack[EnqueueOptions],
    ) -> list[Job]:
        """Blocking twin of :meth:`aenqueue_many`."""
        no_running_loop("enqueue_many", "aenqueue_many")
        now = utcnow()
        if "job_id" in options:
            raise ValueError("job_id names one job: it cannot be given to enqueue_many")
        new = [self._prepare(job, p, {**options, "now": now}) for p in payloads]
        if not new:
            return []
        return self.producer.write_blocking(new)

    # -- inspection and control (async, with sync twins) ------------------------------------------

    async def aget_job(self, job_id: str) -> Job:
        """The job with this id. Raises :class:`JobNotFoundError`."""
        await self.aopen()
        return await self.store.get_job(job_id)

    def get_job(self, job_id: str) -> Job:
        """Blocking twin of :meth:`aget_job`."""
        no_running_loop("get_job", "aget_job")
        return self.blocking.call("get_job", job_id)  # type: ignore[no-any-return]

    async def acancel(self, job_id: str) -> Job:
        """Cancel a pending, retrying or running job. A running attempt is stopped at its next
        heartbeat and its result discarded. Raises :class:`InvalidTransitionError` for a
        finished job."""
        await self.aopen()
        return await self.store.cancel(job_id, now=utcnow())

    def cancel(self, job_id: str) -> Job:
        """Blocking twin of :meth:`acancel`."""
        no_running_loop("cancel", "acancel")
        return self.blocking.call("cancel", job_id)  # type: ignore[no-any-return]

    async def aretry(self, job_id: str) -> Job:
        """Send a failed or cancelled job back to pending with fresh attempts."""
        await self.aopen()
        job = await self.store.retry(job_id, now=utcnow())
        self.producer.wake()
        return job

    async def alist_jobs(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
        order: SortOrder | str = SortOrder.DESC,
        preview: int | None = None,
    ) -> list[Job]:
        """Jobs, newest first (or ``order="asc"``), optionally filtered.

        ``after`` is a keyset cursor, the last id of the previous page: unlike ``offset`` it
        neither skips nor repeats jobs while new ones arrive. With ``preview`` N, payloads
        and results longer than N bytes of JSON come back as
        :class:`~dispatch_core.models.Truncated` (see :class:`JobFilter`); :meth:`aget_job`
        returns one job whole.
        """
        await self.aopen()
        return await self.store.list_jobs(
            JobFilter(
                state=JobState(state) if state is not None else None,
                queue=queue,
                name=name,
                tenant=tenant,
                limit=limit,
                offset=offset,
                after=after,
                order=SortOrder(order),
                preview=preview,
            )
        )

    async def acount_jobs(
        self, *, queue: str | None = None, tenant: str | None = None
    ) -> dict[JobState, int]:
        """Job counts by state, every state present (zero when it has none)."""
        await self.aopen()
        counts = await self.store.count_jobs(queue=queue, tenant=tenant)
        return {state: counts.get(state, 0) for state in JobState}

    async def athroughput(
        self,
        *,
        since: datetime,
        bucket: timedelta = timedelta(minutes=1),
        queue: str | None = None,
        tenant: str | None = None,
    ) -> list[ThroughputBucket]:
        """Jobs completed and failed per time bucket from ``since`` to now, oldest first,
        with empty buckets included (for throughput and failure-rate charts).

        Raises:
            ValueError: ``bucket`` is under a second, or ``since`` is naive.
        """
        seconds = int(bucket.total_seconds())
        if seconds < 1:
            raise ValueError("bucket must be at least one second")
        if since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        await self.aopen()
        found = {
            b.start: b
            for b in await self.store.throughput(
                since=since, bucket_seconds=seconds, queue=queue, tenant=tenant
            )
        }
        first = int(since.timestamp()) // seconds
        last = int(utcnow().timestamp()) // seconds
        starts = (datetime.fromtimestamp(n * seconds, UTC) for n in range(first, last + 1))
        return [found.get(start) or ThroughputBucket(start=start) for start in starts]

    async def alist_dlq(
        self,
        *,
        queue: str | None = None,
        name: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
        order: SortOrder | str = SortOrder.ASC,
        replayed: bool | None = None,
        preview: int | None = None,
    ) -> list[DLQEntry]:
        """Dead-letter entries, oldest failure first (or ``order="desc"``); ``after`` is the
        last id of the previous page. ``replayed=False`` lists only the entries never
        replayed, ``True`` only the replayed ones (replayed entries stay, stamped). With
        ``preview`` N, payloads longer than N bytes of JSON come back as
        :class:`~dispatch_core.models.Truncated`."""
        await self.aopen()
        return await self.store.list_dlq(
            DLQFilter(
                queue=queue,
                name=name,
                tenant=tenant,
                replayed=replayed,
                limit=limit,
                offset=offset,
                after=after,
                order=SortOrder(order),
                preview=preview,
            )
        )

    async def acount_dlq(
        self,
        *,
        queue: str | None = None,
        tenant: str | None = None,
        replayed: bool | None = None,
        before: datetime | None = None,
    ) -> int:
        """The number of dead-letter entries: of one queue and one tenant when given, only
        the never replayed (``replayed=False``) or replayed (``True``) ones, only those that
        failed before ``before`` (timezone-aware)."""
        if before is not None and before.tzinfo is None:
            raise ValueError("before must be timezone-aware")
        await self.aopen()
        return await self.store.count_dlq(
            queue=queue, tenant=tenant, replayed=replayed, before=before
        )

    async def aget_dlq(self, entry_id: str) -> DLQEntry:
        """One dead-letter entry. Raises :class:`DLQEntryNotFoundError`."""
        await self.aopen()
        return await self.store.get_dlq(entry_id)

    async def areplay_dlq(self, entry_id: str) -> Job:
        """Enqueue a fresh copy of a dead-lettered job; the entry records the replay."""
        await self.aopen()
        job = await self.store.replay_dlq(entry_id, new_job_id=new_id("job"), now=utcnow())
        self.producer.enqueued([job], [])
        return job

    async def apurge_dlq(
        self,
        *,
        before: datetime | None = None,
        older_than: timedelta | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete dead-letter entries that failed before ``before`` (or ``older_than`` ago),
        optionally only one queue's or one tenant's, oldest first.

        Args:
            before: The cutoff (timezone-aware).
            older_than: The cutoff as an age.
            queue: Only entries of this queue.
            tenant: Only entries of this tenant.
            limit: Delete at most this many (callers loop to show progress); ``None``: all.

        Returns:
            How many entries were deleted.
        """
        if (before is None) == (older_than is None):
            raise ValueError("give exactly one of before= or older_than=")
        cutoff = before if before is not None else utcnow() - older_than  # type: ignore[operator]
        if cutoff.tzinfo is None:
            raise ValueError("before must be timezone-aware")
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        await self.aopen()
        return await self.store.purge_dlq(before=cutoff, queue=queue, tenant=tenant, limit=limit)

    # -- workers -----------------------------------------------------------------------------------

    def worker(self, **options: Any) -> Worker:
        """Build a :class:`~dispatch_core.worker.Worker` for this engine (see its arguments)."""
        from dispatch_core.worker import Worker

        return Worker(self, **options)

    async def drain(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        wait_scheduled: bool = False,
        timeout: float | None = 60.0,
    ) -> DrainResult:
        """Run jobs until none is runnable, then return what happened (for tests and scripts).

        Args:
            queues: Queues to take jobs from (default: every queue).
            concurrency: Jobs run at once.
            wait_scheduled: Also wait for jobs scheduled in the future (retries in backoff,
                delayed jobs) instead of returning while they wait.
            timeout: Give up after this many seconds (``TimeoutError``).
        """
        worker = self.worker(queues=queues, concurrency=concurrency)
        return await worker.drain(wait_scheduled=wait_scheduled, timeout=timeout)
