"""The blocking producer API on ``redis.Redis``, for code without an event loop."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, cast

import redis
from dispatch_core.errors import JobIdTakenError, JobNotFoundError
from dispatch_core.models import Job, NewJob, utcnow
from dispatch_core.states import JobState, check_transition
from dispatch_core.storekit import job_from_new
from dispatch_plugins.redis import codec as c
from dispatch_plugins.redis.client import is_unavailable, make_sync_client, seval, unavailable
from dispatch_plugins.redis.url import RedisURL

__all__ = ["RedisSyncStore", "enqueue_result"]


def enqueue_result(jobs: Sequence[NewJob], res: list[Any]) -> list[Job]:
    """The jobs an ``enqueue`` script reply stands for (raising for a taken id)."""
    if int(res[0]) == -1:
        raise JobIdTakenError(res[1])
    return [
        job_from_new(new) if stored == 0 else c.job_from(stored)
        for new, stored in zip(jobs, res[1], strict=True)
    ]


class RedisSyncStore:
    """:class:`~dispatch_core.store.SyncStore` for a Redis store.

    Safe to share between threads (``redis.Redis`` keeps a connection pool); the client is
    made on first use, once per process (a client inherited through ``fork()`` is left alone).
    """

    def __init__(self, config: RedisURL) -> None:
        self.config = config
        self.prefix = config.prefix
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"RedisSyncStore({self.config.display!r}, prefix={self.prefix!r})"

    def _get_client(self) -> redis.Redis:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client, self._pid = make_sync_client(self.config), os.getpid()
            return self._client

    def _call(self, name: str, *args: str) -> Any:
        try:
            return seval(self._get_client(), name, [self.prefix, *args])
        except redis.RedisError as exc:
            if is_unavailable(exc):
                raise unavailable(self.config, exc) from exc
            raise

    def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Write ``jobs`` in one script; see :meth:`RedisStore.enqueue`."""
        if not jobs:
            return []
        res = self._call("enqueue", c.us(utcnow()), str(len(jobs)), *c.job_args(jobs))
        return enqueue_result(jobs, res)

    def get_job(self, job_id: str) -> Job:
        """Return the job or raise :class:`~dispatch_core.errors.JobNotFoundError`."""
        client = self._get_client()
        key = f"{self.prefix}:job:{job_id}"
        for attempt in (1, 2):
            try:
                flat = client.hgetall(key)
                break
            except redis.RedisError as exc:
                if attempt == 1 and isinstance(exc, redis.ConnectionError):
                    continue
                if is_unavailable(exc):
                    raise unavailable(self.config, exc) from exc
                raise
        if not flat:
            raise JobNotFoundError(job_id)
        return c.job_from(cast("dict[str, str]", flat))

    def cancel(self, job_id: str) -> Job:
        """Cancel a pending, retrying or running job, as of now."""
        res = self._call("cancel", c.us(utcnow()), job_id)
        status = int(res[0])
        if status == -2:
            raise JobNotFoundError(job_id)
        if status == 0:
            check_transition(job_id, JobState(res[1]), JobState.CANCELLED)
        return c.job_from(res[1])

    def close(self) -> None:
        """Close the client. Idempotent; a later call makes a new one."""
        with self._lock:
            client, self._client = self._client, None
            ours = self._pid == os.getpid()
        if client is not None and ours:
            client.close()
