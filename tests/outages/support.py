"""Outages on demand: proxies in front of the shared PostgreSQL and Redis (which must never be stopped), and a
listener that accepts connections and never answers, like a Redis behind a dropped route."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.engine import make_url

from tests.helpers import ThreadedProxy

__all__ = ["ThreadedProxy", "through"]

PASSWORD = "pw-never-logged-4711"
"""In the database URL the services get; trust authentication ignores it, and it must never reach a log."""


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
