"""A TCP proxy on 127.0.0.1 that can stop forwarding, to play a PostgreSQL server that hangs.

While it hangs, it keeps accepting connections and reading what clients send, but forwards
nothing either way: the client's kernel sees every packet acknowledged, so TCP keepalives and
``tcp_user_timeout`` notice nothing, as with a server process that is stopped or wedged. Only
a deadline of the client's own can end its wait.

The proxy runs its own event loop in a thread, so that a blocking client in the test's thread
(the sync producer) cannot stall it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

__all__ = ["HangingProxy", "hanging_proxy"]


class HangingProxy:
    """Forwards 127.0.0.1:<port> to ``target_host:target_port`` until :meth:`hang`.

    Args:
        target_host: The server's host.
        target_port: The server's port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hanging proxy")

    def start(self) -> None:
        """Listen on a free port (:attr:`port`), forwarding."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def hang(self) -> None:
        """Stop forwarding, on open connections and new ones alike."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        """Forward again."""
        self._loop.call_soon_threadsafe(self._flowing.set)

    def stop(self) -> None:
        """Close every connection and the listening socket, and end the thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()


@contextlib.contextmanager
def hanging_proxy(target_host: str, target_port: int) -> Iterator[HangingProxy]:
    """A started :class:`HangingProxy`, stopped on exit."""
    proxy = HangingProxy(target_host, target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
