"""Conversation state in Redis (with a TTL) and a per-conversation lock that serialises its turns.

Without Redis both live in this process (the in-process cache and asyncio locks), which is right for a
single replica — the embedded default.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from redis.exceptions import LockError, RedisError

from supportbot.cache import Cache, RedisCache
from supportbot.errors import SupportbotError

log = logging.getLogger(__name__)


class ConversationBusy(SupportbotError):
    status_code = 409
    error_type = "conversation_busy"


class ConversationState(BaseModel):
    """What the dialogue needs to remember between turns."""

    flow: str | None = None
    slots: dict[str, str] = Field(default_factory=dict)
    slot_attempts: int = 0
    turn_count: int = 0
    low_confidence_streak: int = 0
    negative_streak: int = 0
    handoff: bool = False
    language: str = "en"


class StateStore:
    def __init__(self, cache: Cache, *, ttl_s: int, lock_timeout_s: float = 30.0) -> None:
        self.cache = cache
        self.ttl_s = ttl_s
        self.lock_timeout_s = lock_timeout_s
        self._local_locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def _key(conversation_id: str) -> str:
        return f"supportbot:dialogue:state:{conversation_id}"

    async def load(self, conversation_id: str) -> ConversationState:
        raw = await self.cache.get(self._key(conversation_id))
        if raw is None:
            return ConversationState()
        try:
            return ConversationState.model_validate_json(raw)
        except ValueError:
            return ConversationState()

    async def save(self, conversation_id: str, state: ConversationState) -> None:
        await self.cache.set(self._key(conversation_id), state.model_dump_json().encode(), self.ttl_s)

    @asynccontextmanager
    async def locked(self, conversation_id: str) -> AsyncIterator[None]:
        """Hold the conversation's lock: across replicas through Redis, else in this process (FIFO)."""
        if isinstance(self.cache, RedisCache):
            async with self._redis_lock(self.cache.client, conversation_id):
                yield
            return
        lock = self._local_locks.setdefault(conversation_id, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), self.lock_timeout_s)
        except TimeoutError as exc:
            raise ConversationBusy("the conversation is busy with earlier messages; retry") from exc
        try:
            yield
        finally:
            lock.release()
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._local_locks.pop(conversation_id, None)

    @asynccontextmanager
    async def _redis_lock(self, client: aioredis.Redis, conversation_id: str) -> AsyncIterator[None]:
        # The lock expires on its own if a replica dies holding it.
        lock = client.lock(f"supportbot:dialogue:lock:{conversation_id}", timeout=self.lock_timeout_s,
                           sleep=0.01, blocking_timeout=self.lock_timeout_s)
        try:
            acquired = await lock.acquire()
        except (RedisError, OSError) as exc:
            log.warning("redis lock unavailable, falling back to a local lock: %s", type(exc).__name__)
            local = self._local_locks.setdefault(conversation_id, asyncio.Lock())
            async with local:
                yield
            return
        if not acquired:
            raise ConversationBusy("the conversation is busy with earlier messages; retry")
        try:
            yield
        finally:
            try:
                await lock.release()
            except (LockError, RedisError, OSError):
                log.warning("conversation lock expired before release")
