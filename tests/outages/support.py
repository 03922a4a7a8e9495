"""Outages on demand: proxies in front of the shared PostgreSQL and Redis (which must never be stopped), and a
listener that accepts connections and never answers, like a Redis behind a dropped route."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from sqlalchemy.engine import make_url

from tests.helpers import TcpProxy

PASSWORD = "pw-never-logged-4711"
"""In the database URL the services get; trust authentication ignores it, and it must never reach a log."""


class ThreadedProxy:
    """A `TcpProxy` on its own event loop: the services migrate their schema with sync code on the test's
    loop at start, which would otherwise block the proxy it goes through."""

    def __init__(self, host: str, port: int) -> None:
        self.proxy = TcpProxy(host, port)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.proxy.port

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def start(self, port: int = 0) -> int:
        self._call(self.proxy.start(port))
        return self.proxy.port

    def stop(self) -> None:
        self._call(self.proxy.stop())

    def close(self) -> None:
        """Stop the proxy and end its loop, with no task left pending."""

        async def shutdown() -> None:
            await self.proxy.stop()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


def through(url: str, port: int, **changes: Any) -> str:
    """`url` with its host and port replaced by the proxy's (and any other parts changed)."""
    return make_url(url).set(host="127.0.0.1", port=port, **changes).render_as_string(hide_password=False)


class Blackhole:
    """Accepts TCP connections on a port and never answers; counts them."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int) -> Blackhole:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._writers.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", port)
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()
