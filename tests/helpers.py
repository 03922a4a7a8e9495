"""Helpers shared by tests: free ports, subprocesses that serve, waiting for readiness."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
SERVICE_TOKEN = "test-service-token-4f1c9a7e2b6d8053"
"""SERVICE_TOKEN of every service the tests build or start (tests/conftest.py sets it in the environment)."""
SERVICE_HEADERS = {"X-Supportbot-Service-Token": SERVICE_TOKEN}
"""What a test sends when it calls nlp, dialogue or llm directly, as the gateway and dialogue do."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(size: int) -> int:
    """A base port whose next `size` ports are all free right now."""
    for _ in range(200):
        base = free_port()
        if base + size >= 65535:
            continue
        ok = True
        for port in range(base, base + size):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free block of ports")


def wait_until_ready(url: str, timeout_s: float = 90.0, process: subprocess.Popen[bytes] | None = None,
                     log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-4000:] if log_path and log_path.exists() else ""
            raise RuntimeError(f"process exited with {process.returncode} before {url} was ready\n{tail}")
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout_s}s: {last}")


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Run `python -m supportbot.cli ARGS` with stdout and stderr to `log_path`."""
    handle = log_path.open("wb")
    return subprocess.Popen([sys.executable, "-m", "supportbot.cli", *args], env={**os.environ, **env},
                            stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)


class TcpProxy:
    """A loopback TCP proxy to a real server; `stop()` cuts every connection, like the server dying."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: object = None
        self._writers: set[object] = set()

    async def start(self, port: int = 0) -> TcpProxy:
        """Listen on `port` (0: any free one; give the old port to bring a stopped proxy back)."""
        import asyncio

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            self._writers.update({client_writer, upstream_writer})
            await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))

        server = await asyncio.start_server(handle, "127.0.0.1", port)
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        return self

    async def stop(self) -> None:
        server = self._server
        server.close()  # type: ignore[attr-defined]
        for writer in self._writers:
            writer.close()  # type: ignore[attr-defined]
        await server.wait_closed()  # type: ignore[attr-defined]


async def create_tenants(database_url: str, *tenant_ids: str,
                         keys: dict[str, tuple[str, str, list[str]]] | None = None) -> dict[str, str]:
    """Migrate the database at `database_url` and create these tenants; their first (admin) API keys by tenant
    id. `keys`: more keys, by a name of the test's choosing → (tenant, role, origins), returned under that name
    (and their key ids under "<name>.id")."""
    from gateway.tenants import create_key, create_tenant
    from supportbot.db import open_database, session_factory

    engine = open_database(database_url)
    try:
        sessions = session_factory(engine)
        made = {tenant: await create_tenant(sessions, tenant_id=tenant) for tenant in tenant_ids}
        for name, (tenant, role, origins) in (keys or {}).items():
            issued = await create_key(sessions, tenant_id=tenant, role=role, origins=origins)
            made[name], made[f"{name}.id"] = issued.key, issued.key_id
        return made
    finally:
        await engine.dispose()


class ThreadedProxy:
    """A `TcpProxy` on its own event loop: services migrate their schema with sync code on the test's loop at
    start, which would otherwise block the proxy it goes through."""

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


async def add_tenants(database_url: str, *tenant_ids: str) -> None:
    """Migrate the database at `database_url` and add these tenants' rows where missing (no keys): dialogue
    and llm serve only tenants that exist."""
    from sqlalchemy import select

    from supportbot.db import open_database, session_factory, transaction
    from supportbot.tenancy import Tenant

    engine = open_database(database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            known = set(await session.scalars(select(Tenant.id).where(Tenant.id.in_(tenant_ids))))
            session.add_all(Tenant(id=tenant, name=tenant) for tenant in tenant_ids if tenant not in known)
    finally:
        await engine.dispose()


async def redis_keys(redis_url: str, prefix: str) -> set[str]:
    """Every Redis key under `prefix` (a test's own)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        return {key.decode() async for key in client.scan_iter(match=f"{prefix}*")}
    finally:
        await client.aclose()
