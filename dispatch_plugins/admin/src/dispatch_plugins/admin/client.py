"""``AdminClient``: the Engine's operator methods, over the admin API of a remote server.

It implements :class:`dispatch_core.operations.Operations`, so the ``dispatch jobs / dlq /
cron / workflows / queues / workers`` commands work with ``--url https://host/dispatch`` as
they do on a store (the ``dispatch_remote_operations`` hook hands it to the CLI)::

    async with AdminClient("https://ops.example.com/dispatch", token) as client:
        failed = await client.alist_jobs(state="failed", limit=20)
        await client.aretry(failed[0].id)

Listings carry previews, as the API sends them: a long payload, result, run input or output
comes back as a :class:`~dispatch_core.models.Truncated` (``preview=N`` asks for N bytes, up
to the server's ``MAX_PREVIEW``; ``None`` takes its default), and the ``aget_*`` methods
return bodies whole.

Answers are decoded into the same models the Engine returns (with the API's codec); API
errors become the core's exceptions where one fits (404: the matching ``*NotFoundError``;
409: :class:`~dispatch_core.InvalidTransitionError` for jobs, ``WorkflowError`` for runs) and
:class:`AdminAPIError` otherwise, with one-line messages that say what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import cattrs
import httpx

from dispatch_core.cluster import WorkerInfo
from dispatch_core.cron import CronEntry
from dispatch_core.errors import (
    CronNotFoundError,
    DispatchError,
    DLQEntryNotFoundError,
    InvalidTransitionError,
    JobNotFoundError,
    NotFoundError,
    RunNotFoundError,
    StoreUnavailableError,
)
from dispatch_core.models import DLQEntry, Job, RunnableCount, SortOrder, utcnow
from dispatch_core.queues import QueueStats
from dispatch_core.states import JobState
from dispatch_core.storekit import redact_url
from dispatch_core.workflows.errors import WorkflowError
from dispatch_core.workflows.models import RunState, StepRecord, WorkflowRun
from dispatch_plugins.admin.codec import format_datetime, from_json
from dispatch_plugins.admin.pagination import MAX_LIMIT, MAX_PREVIEW, encode_cursor

__all__ = [
    "AdminAPIError",
    "AdminAuthError",
    "AdminClient",
    "AdminUnavailableError",
    "DEFAULT_TIMEOUT",
    "TOKEN_ENV",
]

T = TypeVar("T")

#: Seconds a request may take (connecting, or waiting for the answer).
DEFAULT_TIMEOUT = 30.0
#: Where the ``dispatch`` command reads the token; error messages name it.
TOKEN_ENV = "DISPATCH_TOKEN"
#: The most entries one ``POST /dlq/purge`` deletes.
_PURGE_MAX = 10_000

#: Builds the exception for a 404 (or 409) from the server's message and error details.
_ErrorFactory = Callable[[str, Any], DispatchError]


class AdminAPIError(DispatchError):
    """The admin API refused a request, or answered something this client cannot read.

    Attributes:
        status: The HTTP status (0 when there was no answer).
        code: The API's error code (``invalid_request``, ``forbidden``...).
        details: The error's details, as JSON, or ``None``.
    """

    def __init__(self, message: str, *, status: int = 0, code: str = "", details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details


class AdminAuthError(AdminAPIError):
    """401 or 403: the token is missing, unknown, lacks a scope, or is bound to a tenant where
    an operator token is needed."""


class AdminUnavailableError(AdminAPIError, StoreUnavailableError):
    """The server cannot be reached, does not answer in time, or reports its store down
    (503)."""


def _message_with(exc: DispatchError, message: str) -> DispatchError:
    """``exc`` carrying the server's own message (which says the same, perhaps better)."""
    exc.args = (message,)
    return exc


def _job_conflict(job_id: str, target: str) -> _ErrorFactory:
    def build(message: str, details: Any) -> DispatchError:
        current = details.get("state", "?") if isinstance(details, dict) else "?"
        return _message_with(InvalidTransitionError(job_id, str(current), target), message)

    return build


def _run_conflict(message: str, _details: Any) -> DispatchError:
    return WorkflowError(message)


def _not_found(exc: NotFoundError) -> _ErrorFactory:
    return lambda message, _details: _message_with(exc, message)


def _preview(preview: int | None) -> int | None:
    """A listing's ``preview`` as the API takes it: at most its ``MAX_PREVIEW``."""
    return None if preview is None else min(preview, MAX_PREVIEW)


def _enum_value(value: Any, kind: type[Any]) -> str | None:
    return None if value is None else str(kind(value).value)


class AdminClient:
    """A client of the Dispatch admin API mounted at ``url``, with the Engine's operator
    methods (:class:`dispatch_core.operations.Operations`).

    Args:
        url: Where the admin app is mounted, e.g. ``https://ops.example.com/dispatch``
            (``/v1`` is appended).
        token: The bearer token, or ``None`` (only the health routes answer then).
        timeout: Seconds a request may take.
        transport: An httpx transport to use instead of the network (tests).

    Raises:
        ValueError: ``url`` is not an ``http://`` or ``https://`` URL.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parsed = httpx.URL(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"not an http(s) URL of a Dispatch admin API: {redact_url(url)!r}")
        self.url = str(parsed).rstrip("/")
        self.token = token
        self.timeout = timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"<AdminClient {self.safe_url!r}>"

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections; the client opens new ones if used again."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- requests ----------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        # Made on first use, inside the caller's event loop.
        if self._client is None:
            headers = {"Accept": "application/json"}
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._client = httpx.AsyncClient(
                base_url=self.url + "/v1",
                headers=headers,
                timeout=self.timeout,
                transport=self._transport,
            )
        return self._client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        not_found: _ErrorFactory | None = None,
        conflict: _ErrorFactory | None = None,
    ) -> Any:
        """Send one request; return its decoded JSON, or raise what its error stands for."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http().request(
                method,
                path,
                params=query,
                json=None if body is None else {k: v for k, v in body.items() if v is not None},
            )
        except httpx.TimeoutException as exc:
            raise AdminUnavailableError(
                f"the Dispatch admin API at {self.safe_url} did not answer {method} /v1{path} "
                f"within {self.timeout:g}s"
            ) from exc
        except httpx.ConnectError as exc:
            raise AdminUnavailableError(
                f"cannot connect to the Dispatch admin API at {self.safe_url}: "
                f"{_reason(exc)} (is the server running there?)"
            ) from exc
        except httpx.HTTPError as exc:
            raise AdminUnavailableError(
                f"talking to the Dispatch admin API at {self.safe_url} failed: {_reason(exc)}"
            ) from exc
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise self._not_the_api(method, path, "did not answer with JSON") from None
        raise self._error(response, method, path, not_found, conflict)

    def _not_the_api(self, method: str, path: str, what: str) -> AdminAPIError:
        return AdminAPIError(
            f"{self.safe_url} {what} to {method} /v1{path}: it does not look like a Dispatch "
            "admin API; --url must be where the admin app is mounted, e.g. "
            "http://127.0.0.1:8000/dispatch"
        )

    def _error(
        self,
        response: httpx.Response,
        method: str,
        path: str,
        not_found: _ErrorFactory | None,
        conflict: _ErrorFactory | None,
    ) -> DispatchError:
        """The exception for an error answer."""
        status = response.status_code
        try:
            error = response.json()["error"]
            code, message, details = str(error["code"]), str(error["message"]), error["details"]
        except (ValueError, KeyError, TypeError):
            if status in (404, 405):
                return self._not_the_api(method, path, f"answered {status}")
            reason = response.reason_phrase or "error"
            return AdminAPIError(
                f"the server at {self.safe_url} answered {method} /v1{path} with {status} {reason}",
                status=status,
            )
        if status == 401:
            return AdminAuthError(
                self._unauthorized(code, message), status=status, code=code, details=details
            )
        if status == 403:
            return AdminAuthError(
                self._forbidden(code, message, details), status=status, code=code, details=details
            )
        if status == 404 and message.startswith("no route "):
            return self._not_the_api(method, path, "has no such route")
        if status == 404 and not_found is not None:
            return not_found(message, details)
        if status == 409 and conflict is not None:
            return conflict(message, details)
        if status == 503:
            return AdminUnavailableError(
                f"the Dispatch admin API at {self.safe_url}: {message}",
                status=status,
                code=code,
                details=details,
            )
        return AdminAPIError(message, status=status, code=code, details=details)

    def _too_old(self, message: str, details: Any) -> DispatchError:
        """A 404 for a route this client knows: a server older than it (where
        ``/v1/jobs/unhandled`` reads as the job ``unhandled``)."""
        return AdminAPIError(
            f"the Dispatch admin API at {self.safe_url} does not offer this yet ({message}): "
            "upgrade dispatch-admin on the server",
            status=404,
            code="not_found",
            details=details,
        )

    def _unauthorized(self, code: str, message: str) -> str:
        where = f"the Dispatch admin API at {self.safe_url}"
        if code == "no_tokens_configured":
            return (
                f"{where} has no tokens configured, so it refuses every request: configure "
                "them on the server (DISPATCH_ADMIN_TOKENS, or dispatch serve --tokens-file)"
            )
        if not self.token:
            return f"{where} needs a token, and {TOKEN_ENV} is not set: export {TOKEN_ENV}=<token>"
        return f"{where} refused the token in {TOKEN_ENV} ({message}): check {TOKEN_ENV}"

    def _forbidden(self, code: str, message: str, details: Any) -> str:
        if code == "operator_only":
            return (
                f"{message}; set {TOKEN_ENV} to an operator token (one bound to no tenant) for this"
            )
        required = details.get("required") if isinstance(details, dict) else None
        if required:
            return f"{message}; set {TOKEN_ENV} to a token with the scope {required!r}"
        return f"forbidden: {message}"

    def _decode(self, data: Any, cls: Any, method: str, path: str) -> Any:
        try:
            return from_json(data, cls)
        except (cattrs.BaseValidationError, KeyError, TypeError, ValueError) as exc:
            raise AdminAPIError(
                f"cannot read the answer of {self.safe_url} to {method} /v1{path} (is the "
                f"server's dispatch-admin version compatible?): {type(exc).__name__}: {exc}"
            ) from exc

    async def _get(self, path: str, cls: type[T], **kwargs: Any) -> T:
        data = await self._call("GET", path, **kwargs)
        result: T = self._decode(data, cls, "GET", path)
        return result

    async def _post(self, path: str, cls: type[T], **kwargs: Any) -> T:
        data = await self._call("POST", path, body=kwargs.pop("body", {}), **kwargs)
        result: T = self._decode(data, cls, "POST", path)
        return result

    async def _list(
        self,
        path: str,
        cls: type[T],
        *,
        params: Mapping[str, Any],
        limit: int | None,
        after: str | None = None,
        order: SortOrder | str | None = None,
    ) -> list[T]:
        """Up to ``limit`` items (``None``: all) of a paged listing, following
        ``next_cursor``."""
        items: list[T] = []
        cursor = encode_cursor(after) if after else None
        while limit is None or len(items) < limit:
            size = MAX_LIMIT if limit is None else min(limit - len(items), MAX_LIMIT)
            query = {
                **params,
                "limit": size,
                "order": _enum_value(order, SortOrder),
                "cursor": cursor,
            }
            data = await self._call("GET", path, params=query)
            try:
                raw_items, cursor = data["items"], data["next_cursor"]
            except (KeyError, TypeError):
                raise self._not_the_api("GET", path, "answered without items") from None
            items.extend(self._decode(raw_items, list[cls], "GET", path))  # type: ignore[valid-type]
            if not cursor:
                break
        return items

    # -- jobs --------------------------------------------------------------------------------------

    async def alist_jobs(
        self,
        *,
        state: JobState | str | None = None,
        queue: str | None = None,
        name: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        after: str | None = None,
        order: SortOrder | str = SortOrder.DESC,
        preview: int | None = None,
    ) -> list[Job]:
        """Jobs by id, newest first by default (``GET /v1/jobs``); long payloads and results
        as :class:`~dispatch_core.models.Truncated` previews (``preview`` bytes, or the
        server's default)."""
        params = {
            "state": _enum_value(state, JobState),
            "queue": queue,
            "name": name,
            "tenant": tenant,
            "preview": _preview(preview),
        }
        return await self._list("/jobs", Job, params=params, limit=limit, after=after, order=order)

    async def acount_jobs(
        self, *, queue: str | None = None, tenant: str | None = None
    ) -> dict[JobState, int]:
        """Job counts by state, every state present (``GET /v1/jobs/counts``)."""
        data = await self._get(
            "/jobs/counts", dict[str, int], params={"queue": queue, "tenant": tenant}
        )
        return {state: int(data.get(state.value, 0)) for state in JobState}

    async def aunhandled_jobs(self, *, tenant: str | None = None) -> list[RunnableCount]:
        """Runnable jobs that no running worker takes, counted by queue and name; empty when
        every waiting job has a worker (``GET /v1/jobs/unhandled``)."""
        data = await self._call(
            "GET", "/jobs/unhandled", params={"tenant": tenant}, not_found=self._too_old
        )
        try:
            items = data["items"]
        except (KeyError, TypeError):
            raise self._not_the_api("GET", "/jobs/unhandled", "answered without items") from None
        rows: list[RunnableCount] = self._decode(
            items, list[RunnableCount], "GET", "/jobs/unhandled"
        )
        return rows

    async def aget_job(self, job_id: str) -> Job:
        """One job; :class:`~dispatch_core.JobNotFoundError` if this token cannot see it."""
        return await self._get(
            f"/jobs/{_segment(job_id)}", Job, not_found=_not_found(JobNotFoundError(job_id))
        )

    async def acancel(self, job_id: str) -> Job:
        """Cancel an unfinished job; :class:`~dispatch_core.InvalidTransitionError` for a
        finished one."""
        return await self._post(
            f"/jobs/{_segment(job_id)}/cancel",
            Job,
            not_found=_not_found(JobNotFoundError(job_id)),
            conflict=_job_conflict(job_id, JobState.CANCELLED.value),
        )

    async def aretry(self, job_id: str) -> Job:
        """Send a failed or cancelled job back to pending with fresh attempts."""
        return await self._post(
            f"/jobs/{_segment(job_id)}/retry",
            Job,
            not_found=_not_found(JobNotFoundError(job_id)),
            conflict=_job_conflict(job_id, JobState.PENDING.value),
        )

    # -- dead letters ------------------------------------------------------------------------------

    async def alist_dlq(
        self,
        *,
        queue: str | None = None,
        name: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        after: str | None = None,
        order: SortOrder | str = SortOrder.ASC,
        replayed: bool | None = None,
        preview: int | None = None,
    ) -> list[DLQEntry]:
        """Dead-letter entries by id, oldest failure first by default (``GET /v1/dlq``);
        ``replayed=False``: only those never replayed, ``True``: only replayed ones; long
        payloads as previews."""
        params = {
            "queue": queue,
            "name": name,
            "tenant": tenant,
            "replayed": _flag(replayed),
            "preview": _preview(preview),
        }
        return await self._list(
            "/dlq", DLQEntry, params=params, limit=limit, after=after, order=order
        )

    async def acount_dlq(
        self,
        *,
        queue: str | None = None,
        tenant: str | None = None,
        replayed: bool | None = None,
        before: datetime | None = None,
    ) -> int:
        """The number of dead-letter entries (``GET /v1/dlq/count``); ``before``: only
        those that failed before it (timezone-aware)."""
        if before is not None and before.tzinfo is None:
            raise ValueError("before must be timezone-aware")
        params = {
            "queue": queue,
            "tenant": tenant,
            "replayed": _flag(replayed),
            "before": None if before is None else format_datetime(before),
        }
        data = await self._get("/dlq/count", dict[str, int], params=params)
        return int(data["count"])

    async def aget_dlq(self, entry_id: str) -> DLQEntry:
        """One entry; :class:`~dispatch_core.DLQEntryNotFoundError` if unknown."""
        return await self._get(
            f"/dlq/{_segment(entry_id)}",
            DLQEntry,
            not_found=_not_found(DLQEntryNotFoundError(entry_id)),
        )

    async def areplay_dlq(self, entry_id: str) -> Job:
        """Enqueue an entry again as a new job; return the job."""
        return await self._post(
            f"/dlq/{_segment(entry_id)}/replay",
            Job,
            not_found=_not_found(DLQEntryNotFoundError(entry_id)),
        )

    async def apurge_dlq(
        self,
        *,
        before: datetime | None = None,
        older_than: timedelta | None = None,
        queue: str | None = None,
        tenant: str | None = None,
        limit: int | None = None,
    ) -> int:
        """Delete entries that failed before the cutoff, oldest first, at most ``limit``
        (``None``: all, 10,000 per request); return how many were deleted."""
        if (before is None) == (older_than is None):
            raise ValueError("give exactly one of before= or older_than=")
        cutoff = before if before is not None else utcnow() - older_than  # type: ignore[operator]
        if cutoff.tzinfo is None:
            raise ValueError("before must be timezone-aware")
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        purged = 0
        while limit is None or purged < limit:
            batch = _PURGE_MAX if limit is None else min(limit - purged, _PURGE_MAX)
            data = await self._post(
                "/dlq/purge",
                dict[str, int],
                body={
                    "before": format_datetime(cutoff),
                    "queue": queue,
                    "tenant": tenant,
                    "limit": batch,
                },
            )
            purged += int(data["purged"])
            if int(data["purged"]) < batch:
                break
        return purged

    # -- cron --------------------------------------------------------------------------------------

    async def acron_entries(self) -> list[CronEntry]:
        """Every cron entry, by name (``GET /v1/cron``)."""
        return await self._list("/cron", CronEntry, params={}, limit=None)

    async def aget_cron(self, name: str) -> CronEntry:
        """One cron entry; :class:`~dispatch_core.CronNotFoundError` if unknown."""
        return await self._get(
            f"/cron/{_segment(name)}", CronEntry, not_found=_not_found(CronNotFoundError(name))
        )

    async def aenable_cron(self, name: str) -> CronEntry:
        """Enable an entry from its next tick on."""
        return await self._post(
            f"/cron/{_segment(name)}/enable",
            CronEntry,
            not_found=_not_found(CronNotFoundError(name)),
        )

    async def adisable_cron(self, name: str) -> CronEntry:
        """Disable an entry."""
        return await self._post(
            f"/cron/{_segment(name)}/disable",
            CronEntry,
            not_found=_not_found(CronNotFoundError(name)),
        )

    async def atrigger_cron(self, name: str) -> Job:
        """Enqueue an entry's job now; return it."""
        return await self._post(
            f"/cron/{_segment(name)}/trigger", Job, not_found=_not_found(CronNotFoundError(name))
        )

    # -- queues and workers ------------------------------------------------------------------------

    async def aqueues(self) -> list[QueueStats]:
        """Every queue with its limits, pause flag and load, by name (``GET /v1/queues``)."""
        return await self._list("/queues", QueueStats, params={}, limit=None)

    async def apause_queue(self, name: str) -> None:
        """Pause a queue."""
        await self._call("POST", f"/queues/{_segment(name)}/pause", body={})

    async def aresume_queue(self, name: str) -> None:
        """Resume a paused queue."""
        await self._call("POST", f"/queues/{_segment(name)}/resume", body={})

    async def aworkers(self) -> list[WorkerInfo]:
        """Every registered worker, oldest first (``GET /v1/workers``)."""
        workers = await self._list("/workers", WorkerInfo, params={}, limit=None)
        # The API pages by id; the Engine lists by start time.
        return sorted(workers, key=lambda w: (w.started_at, w.id))

    async def aleader(self) -> str | None:
        """The id of the leader, or ``None``."""
        data = await self._call("GET", "/workers", params={"limit": 1})
        leader = data.get("leader") if isinstance(data, dict) else None
        return str(leader) if leader is not None else None

    # -- workflows ---------------------------------------------------------------------------------

    async def alist_runs(
        self,
        *,
        state: RunState | str | None = None,
        name: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        after: str | None = None,
        order: SortOrder | str = SortOrder.DESC,
        preview: int | None = None,
    ) -> list[WorkflowRun]:
        """Workflow runs by id, newest first by default (``GET /v1/runs``); long inputs and
        outputs as previews."""
        params = {
            "state": _enum_value(state, RunState),
            "name": name,
            "tenant": tenant,
            "preview": _preview(preview),
        }
        return await self._list(
            "/runs", WorkflowRun, params=params, limit=limit, after=after, order=order
        )

    async def aget_run(self, run_id: str) -> WorkflowRun:
        """One run; :class:`~dispatch_core.RunNotFoundError` if unknown."""
        return await self._get(
            f"/runs/{_segment(run_id)}", WorkflowRun, not_found=_not_found(RunNotFoundError(run_id))
        )

    async def atimeline(self, run_id: str) -> list[StepRecord]:
        """A run's history: steps, sleeps, waits (``GET /v1/runs/{id}/timeline``)."""
        path = f"/runs/{_segment(run_id)}/timeline"
        data = await self._call("GET", path, not_found=_not_found(RunNotFoundError(run_id)))
        steps: list[StepRecord] = self._decode(
            data.get("steps") if isinstance(data, dict) else None, list[StepRecord], "GET", path
        )
        return steps

    async def acancel_run(self, run_id: str) -> WorkflowRun:
        """Cancel an unfinished run; ``WorkflowError`` for a finished one."""
        return await self._post(
            f"/runs/{_segment(run_id)}/cancel",
            WorkflowRun,
            not_found=_not_found(RunNotFoundError(run_id)),
            conflict=_run_conflict,
        )

    async def areplay_run(self, run_id: str, from_step: str) -> WorkflowRun:
        """Run a finished run again from ``from_step``, as a new run; return it."""
        return await self._post(
            f"/runs/{_segment(run_id)}/replay",
            WorkflowRun,
            body={"from_step": from_step},
            not_found=_not_found(RunNotFoundError(run_id)),
            conflict=_run_conflict,
        )

    async def asend_event(
        self,
        name: str,
        payload: Any = None,
        *,
        run_id: str | None = None,
        correlation_key: str | None = None,
        tenant: str | None = None,
    ) -> list[str]:
        """Send an event to a run (or the runs of a correlation key); return the ids of the
        runs it reached (``POST /v1/events``)."""
        if (run_id is None) == (correlation_key is None):
            raise ValueError("give run_id or correlation_key, not both and not neither")
        body: dict[str, Any] = {
            "name": name,
            "payload": payload,  # left out when None, which the API reads as null
            "run_id": run_id,
            "correlation_key": correlation_key,
            "tenant": tenant,
        }
        data = await self._call(
            "POST",
            "/events",
            body=body,
            not_found=_not_found(RunNotFoundError(run_id or "")),
        )
        return list(self._decode(data, dict[str, list[str]], "POST", "/events")["run_ids"])


def _flag(value: bool | None) -> str | None:
    """A boolean query parameter as the API spells it (``None``: left out)."""
    return None if value is None else ("true" if value else "false")


def _segment(value: str) -> str:
    """``value`` as one URL path segment (a cron name may hold ``/`` or ``?``)."""
    return quote(value, safe="")


def _reason(exc: httpx.HTTPError) -> str:
    """``connection refused``: the gist of a transport error."""
    text = str(exc) or type(exc).__name__
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else text
