"""Limits through real uvicorn processes on loopback: two gateway replicas sharing one Redis (the test's
prefix) and one database hold one request limit between them; oversized requests never get in."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from tests.helpers import create_tenants, free_port, spawn, wait_until_ready

LIMIT = 30
REQUESTS = 120


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"}}
    return {**env, "SUPPORTBOT_DATA_DIR": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1", **extra}


class Processes:
    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def serve(self, service: str, port: int, env: dict[str, str], log: Path) -> None:
        process = spawn(["serve", service, "--port", str(port)], env, log)
        self.running.append(process)
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", 90, process, log)

    def stop(self) -> None:
        for process in self.running:
            process.terminate()
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
def processes() -> Iterator[Processes]:
    started = Processes()
    try:
        yield started
    finally:
        started.stop()


def test_two_gateway_processes_never_accept_more_than_the_limit(
        tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str, processes: Processes) -> None:
    keys = asyncio.run(create_tenants(postgres_url, "acme", keys={"hammer": ("acme", "api", [])}))
    dialogue_port, first, second = free_port(), free_port(), free_port()
    env = _env(tmp_path, DATABASE_URL=postgres_url, REDIS_URL=redis_url, REDIS_KEY_PREFIX=redis_prefix,
               DIALOGUE_URL=f"http://127.0.0.1:{dialogue_port}", NLP_URL=f"http://127.0.0.1:{free_port()}",
               LLM_URL=f"http://127.0.0.1:{free_port()}", RATE_LIMIT_PER_KEY=f"{LIMIT}/minute",
               RATE_LIMIT_PER_TENANT="off", TOKEN_LIMIT_PER_KEY="off", TOKEN_LIMIT_PER_TENANT="off")
    processes.serve("dialogue", dialogue_port, env, tmp_path / "dialogue.log")
    processes.serve("gateway", first, env, tmp_path / "gateway-1.log")
    processes.serve("gateway", second, env, tmp_path / "gateway-2.log")

    admin = {"Authorization": f"Bearer {keys['acme']}"}
    conversation = httpx.post(f"http://127.0.0.1:{first}/v1/conversations", headers=admin, timeout=30).json()["id"]
    hammer = {"Authorization": f"Bearer {keys['hammer']}"}

    async def hammer_both() -> list[tuple[int, int, float]]:
        gate = asyncio.Semaphore(24)
        async with httpx.AsyncClient(timeout=30) as client:
            async def one(n: int) -> tuple[int, int, float]:
                port = (first, second)[n % 2]
                async with gate:
                    response = await client.get(f"http://127.0.0.1:{port}/v1/conversations/{conversation}/messages",
                                                headers=hammer)
                return port, response.status_code, time.monotonic()

            return await asyncio.gather(*(one(n) for n in range(REQUESTS)))

    started = time.monotonic()
    results = asyncio.run(hammer_both())
    elapsed = time.monotonic() - started

    statuses = Counter(status for _, status, _ in results)
    assert set(statuses) <= {200, 429}, statuses
    accepted = [(port, at) for port, status, at in results if status == 200]
    assert len(accepted) <= LIMIT, statuses
    # Within one window (the whole run is far shorter than a minute) exactly the limit gets in, served by both
    # replicas: each counting alone would have let up to twice as many through.
    assert elapsed < 50, elapsed
    assert len(accepted) == LIMIT, statuses
    assert {port for port, _ in accepted} == {first, second}
    client = redis_sync.Redis.from_url(redis_url, socket_timeout=5)
    assert client.keys(f"{redis_prefix}ratelimit:*requests-key*")


def _raw_request(port: int, head: bytes) -> bytes:
    """Send a request head over a plain socket; what the server answers until it closes (b"" if it only
    closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and answered (or closed) before the head was all sent
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while len(received) < 65536 and (chunk := sock.recv(4096)):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def test_uvicorn_refuses_oversized_header_sections(tmp_path: Path, processes: Processes) -> None:
    port = free_port()
    env = _env(tmp_path, DIALOGUE_URL=f"http://127.0.0.1:{free_port()}")
    processes.serve("gateway", port, env, tmp_path / "gateway.log")
    start = b"GET /v1/conversations HTTP/1.1\r\nHost: 127.0.0.1\r\n"

    one_megabyte = _raw_request(port, start + b"X-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
    many = _raw_request(port, start + b"".join(b"X-H%d: 1\r\n" % i for i in range(2000)) + b"\r\n")
    # uvicorn (httptools) passes both to the app: the gateway's own limit refuses them, in its error shape.
    for response in (one_megabyte, many):
        assert response.startswith(b"HTTP/1.1 431"), response[:200]
        assert b'"request_header_fields_too_large"' in response, response[:400]

    normal = _raw_request(port, start + b"\r\n")
    assert normal.startswith(b"HTTP/1.1 401"), normal  # the same server still serves ordinary requests

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        def chunks() -> Iterator[bytes]:
            for _ in range(100):
                yield b"x" * 10_000

        streamed = client.post("/v1/conversations", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["error"]["type"] == "payload_too_large"
