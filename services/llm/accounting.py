"""Usage accounting: one event per generation, written in batches, never lost.

`UsageRecorder.record()` only queues the event (no I/O on the request path). A background task inserts
queued events in batches; if the database is down the batch is appended to a spool file
(`<SUPPORTBOT_DATA_DIR>/spool/usage.jsonl`, flushed and fsynced under a file lock) and replayed when the
database answers again. Inserts skip request ids already stored, so a replay interrupted half-way (or run by
two replicas sharing the directory) still writes every event exactly once.

Why a local file rather than a Redis stream: the spool must hold exactly when a dependency is failing, and
Redis is optional and may fail together with the database; a fsynced append survives a restart of this
process with no other service up. (Events still in the in-memory queue — at most `flush_interval_s` worth —
are flushed on graceful shutdown; a hard kill loses them.)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.llm.storage import insert_usage_events
from supportbot.db import transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UsageRecord:
    tenant_id: str
    conversation_id: str | None
    request_id: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    cached: bool
    estimated: bool
    latency_ms: float
    outcome: str  # ok, failover, stream_cut, client_disconnected, caller_gone (finished after the caller's deadline)
    created_at: datetime

    def to_json(self) -> str:
        data = asdict(self)
        data["cost_usd"] = str(self.cost_usd)
        data["created_at"] = self.created_at.isoformat()
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> UsageRecord:
        data = json.loads(line)
        data["cost_usd"] = Decimal(data["cost_usd"])
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        return cls(**data)


class Spool:
    """An append-only JSONL file of events the database did not take yet."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "usage.jsonl"

    def append(self, records: list[UsageRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = "".join(record.to_json() + "\n" for record in records).encode()
        with open(self.path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())

    def pending(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    @contextlib.contextmanager
    def locked(self) -> Any:
        """Hold the spool; yields its records, and `truncate()` empties it once they are stored."""
        with open(self.path, "r+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            records = [UsageRecord.from_json(line) for line in handle.read().decode().splitlines()
                       if line.strip()]

            def truncate() -> None:
                handle.truncate(0)
                handle.flush()
                os.fsync(handle.fileno())

            yield records, truncate


class UsageRecorder:
    """Queues usage events and writes them in batches from a background task."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], spool_dir: Path, *, batch_size: int = 200,
                 flush_interval_s: float = 0.5, spool_retry_s: float = 5.0,
                 scrub: Callable[[list[UsageRecord]], Awaitable[list[UsageRecord]]] | None = None) -> None:
        self.sessions = sessions
        self.scrub = scrub
        """Applied to events just before they are stored (clears ids of erased conversations)."""
        self.spool = Spool(spool_dir)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.spool_retry_s = spool_retry_s
        self._queue: asyncio.Queue[UsageRecord | None] = asyncio.Queue()  # None: stop
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def record(self, event: UsageRecord) -> None:
        """Queue one event; returns at once."""
        self._idle.clear()
        self._queue.put_nowait(event)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def stop(self) -> None:
        """Write (or spool) everything queued, then stop."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        await self._write(self._drain())

    async def flush(self) -> None:
        """Wait until every event queued so far is stored or spooled (for tests and shutdown)."""
        while not self._queue.empty() or not self._idle.is_set():
            await asyncio.sleep(0.01)

    async def replay_spool(self) -> int:
        """Insert every spooled event; returns how many were stored (0 while the database is down)."""
        if not await asyncio.to_thread(self.spool.pending):
            return 0
        try:
            with self.spool.locked() as (records, truncate):
                records = await self._scrubbed(records)
                for start in range(0, len(records), self.batch_size):
                    async with transaction(self.sessions) as session:
                        await insert_usage_events(session, [_row(r) for r in records[start:start + self.batch_size]])
                truncate()
        except Exception as exc:  # noqa: BLE001 — retried later
            log.warning("usage spool not replayed yet: %s", type(exc).__name__)
            return 0
        log.info("replayed spooled usage events", extra={"supportbot.count": len(records)})
        return len(records)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_replay = 0.0
        while True:
            if loop.time() >= next_replay:
                await self.replay_spool()
                next_replay = loop.time() + self.spool_retry_s
            try:
                async with asyncio.timeout(self.spool_retry_s):
                    first = await self._queue.get()
            except TimeoutError:
                self._idle.set()
                continue
            if first is None:
                return
            await asyncio.sleep(self.flush_interval_s)  # let a batch gather
            await self._write([first, *self._drain()])
            if self._queue.empty():
                self._idle.set()

    def _drain(self) -> list[UsageRecord]:
        records: list[UsageRecord] = []
        while not self._queue.empty() and len(records) < 10 * self.batch_size:
            record = self._queue.get_nowait()
            if record is None:
                self._queue.put_nowait(None)  # keep the stop signal for the loop
                break
            records.append(record)
        return records

    async def _write(self, records: list[UsageRecord]) -> None:
        if not records:
            self._idle.set()
            return
        # Older spooled events go in before new ones; while they cannot, new ones join them in the spool.
        if await asyncio.to_thread(self.spool.pending) and not await self.replay_spool():
            await asyncio.to_thread(self.spool.append, records)
            return
        try:
            records = await self._scrubbed(records)
            for start in range(0, len(records), self.batch_size):
                async with transaction(self.sessions) as session:
                    await insert_usage_events(session, [_row(r) for r in records[start:start + self.batch_size]])
        except Exception as exc:  # noqa: BLE001 — whatever failed, the events must not be lost
            log.error("database unavailable, usage events spooled", extra={
                "supportbot.error": type(exc).__name__, "supportbot.count": len(records)})
            await asyncio.to_thread(self.spool.append, records)

    async def _scrubbed(self, records: list[UsageRecord]) -> list[UsageRecord]:
        return await self.scrub(records) if self.scrub is not None else records


def _row(record: UsageRecord) -> dict[str, Any]:
    return asdict(record)
