"""A :class:`~dispatch_core.Worker` run as a task of the web app's event loop."""

from __future__ import annotations

import asyncio
import logging

from dispatch_core import Worker

__all__ = ["WorkerTask", "STOP_MARGIN"]

log = logging.getLogger("dispatch_starlette")

#: Seconds allowed beyond the grace period for the worker to cancel and release what still
#: runs and record the outcomes; after that the task is cancelled so shutdown cannot hang.
STOP_MARGIN = 10.0


class WorkerTask:
    """Runs one worker in the current event loop, without signal handlers (the server owns
    SIGINT/SIGTERM), and stops it gracefully."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._task: asyncio.Task[object] | None = None
        self._stopping = False

    def start(self) -> None:
        """Start the worker in a task of the running loop."""
        self._task = asyncio.create_task(
            self.worker.run(install_signal_handlers=False),
            name=f"dispatch-worker-{self.worker.id}",
        )
        self._task.add_done_callback(self._ended)
        log.info(
            "in-process Dispatch worker %s starting (queues=%s, concurrency=%d)",
            self.worker.id,
            ",".join(self.worker.queues) if self.worker.queues else "*",
            self.worker.concurrency,
        )

    def _ended(self, task: asyncio.Task[object]) -> None:
        if self._stopping:
            return
        # The worker survives store outages on its own; ending early is a bug worth shouting.
        error = None if task.cancelled() else task.exception()
        log.error(
            "in-process Dispatch worker %s ended while the app still runs; this process no "
            "longer runs jobs",
            self.worker.id,
            exc_info=error,
        )

    async def stop(self) -> None:
        """Stop claiming, give running jobs the worker's grace period, then release the rest
        (their attempt is not consumed) and wait for the worker to record it all."""
        task = self._task
        self._stopping = True
        if task is None or task.done():
            return
        grace = self.worker.grace_period
        log.info(
            "stopping in-process Dispatch worker %s; running jobs get up to %gs",
            self.worker.id,
            grace,
        )
        self.worker.stop()
        try:
            done, _ = await asyncio.wait({task}, timeout=grace + STOP_MARGIN)
        except BaseException:  # the lifespan itself is cancelled: do not leave the worker
            task.cancel()
            raise
        if not done:
            log.error(
                "in-process Dispatch worker %s did not stop within %gs; cancelling it (its jobs "
                "are rescued when their leases expire)",
                self.worker.id,
                grace + STOP_MARGIN,
            )
            task.cancel()
            await asyncio.wait({task})
        elif not task.cancelled() and task.exception() is not None:
            log.error(
                "in-process Dispatch worker %s failed while stopping",
                self.worker.id,
                exc_info=task.exception(),
            )
