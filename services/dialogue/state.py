"""Conversation state (with a TTL) and a per-conversation lock that serialises its turns.

Both go through Redis while it answers (`supportbot.cache.SharedRedis`), so every replica sees them. Without
Redis, or while it is down, they live in this process (the in-process cache, asyncio locks), which is right
for a single replica, the embedded default. Keys start with the settings' `redis_key_prefix`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import BaseModel, Field
from redis.exceptions import LockError

from supportbot.cache import REDIS_ERRORS, Cache, SharedRedis
from supportbot.errors import SupportbotError
from supportbot.pii import SENSITIVE, redact

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
    def __init__(self, cache: Cache, *, ttl_s: int, redis: SharedRedis | None = None, key_prefix: str = "supportbot:",
                 lock_timeout_s: float = 30.0) -> None:
        self.cache = cache
        self.redis = redis
        self.ttl_s = ttl_s
        self.key_prefix = key_prefix
        self.lock_timeout_s = lock_timeout_s
        self._local_locks: dict[str, asyncio.Lock] = {}

    def _key(self, conversation_id: str) -> str:
        return f"{self.key_prefix}dialogue:state:{conversation_id}"

    async def load(self, conversation_id: str) -> ConversationState:
        raw = await self.cache.get(self._key(conversation_id))
        if raw is None:
            return ConversationState()
        try:
            return ConversationState.model_validate_json(raw)
        except ValueError:
            return ConversationState()

    async def save(self, conversation_id: str, state: ConversationState) -> None:
        """Store the state; card numbers, IBANs and secrets in slot values are redacted first, so such a value
        is usable only within the turn it was typed in (a payment belongs on a payment page, not in a chat)."""
        slots = {name: redact(value, SENSITIVE)[0] for name, value in state.slots.items()}
        stored = state.model_copy(update={"slots": slots}) if slots != state.slots else state
        await self.cache.set(self._key(conversation_id), stored.model_dump_json().encode(), self.ttl_s)

    async def forget(self, conversation_id: str) -> None:
        """Delete the conversation's state (while Redis is down: here, and in Redis once it answers again)."""
        await self.cache.delete(self._key(conversation_id))

    @asynccontextmanager
    async def locked(self, conversation_id: str) -> AsyncIterator[None]:
        """Hold the conversation's lock: in this process always (FIFO), and across replicas through Redis while
        it answers. Taking the local one first keeps this process's turns in order whichever way Redis goes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_timeout_s
        lock = self._local_locks.setdefault(conversation_id, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), self.lock_timeout_s)
        except TimeoutError as exc:
            raise ConversationBusy("the conversation is busy with earlier messages; retry") from exc
        try:
            if self.redis is not None and self.redis.up:
                async with self._redis_lock(self.redis, conversation_id, max(0.0, deadline - loop.time())):
                    yield
            else:
                yield
        finally:
            lock.release()
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._local_locks.pop(conversation_id, None)

    @asynccontextmanager
    async def _redis_lock(self, redis: SharedRedis, conversation_id: str, wait_s: float) -> AsyncIterator[None]:
        # The lock expires on its own if a replica dies holding it.
        lock = redis.client.lock(f"{self.key_prefix}dialogue:lock:{conversation_id}", timeout=self.lock_timeout_s,
                                 sleep=0.01, blocking_timeout=wait_s)
        try:
            acquired: bool | None = await lock.acquire()
        except REDIS_ERRORS as exc:
            redis.failed(exc)
            acquired = None
        if acquired is None:  # Redis went away: the local lock alone, as without Redis
            yield
            return
        if not acquired:
            raise ConversationBusy("the conversation is busy with earlier messages; retry")
        try:
            yield
        finally:
            try:
                await lock.release()
            except LockError:
                log.warning("conversation lock expired before release")
            except REDIS_ERRORS as exc:
                redis.failed(exc)
