"""Exact-match response cache with single flight.

Keys are scoped by tenant (entries are never shared between tenants) and hash the model, the whole
conversation (whitespace-normalized), the generation parameters and the grounding context. Entries keep the
chunks a streamed answer came in, so a hit can be replayed as a real stream.

Single flight: concurrent identical misses make one upstream call. Inside a process the followers await the
leader's future; across replicas the leader holds a Redis lock (`SET NX PX`) and followers poll for the entry
until the lock goes away. If the leader gets no cacheable answer, followers go upstream themselves. While
Redis is down (`SharedRedis.up` false) the entries live in this process and single flight is per process.
Keys start with the settings' `redis_key_prefix`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field

from pydantic import BaseModel

from services.llm.providers.base import SamplingParams
from supportbot.cache import REDIS_ERRORS, Cache, SharedRedis
from supportbot.contracts.llm import ChatMessage, GenerationContext

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class CachedAnswer(BaseModel):
    text: str
    model: str
    provider: str
    chunks: list[str] = []
    """The pieces a streamed answer arrived in (empty for a non-streamed one)."""


def cache_key(*, tenant_id: str, model: str, messages: list[ChatMessage], params: SamplingParams,
              context: GenerationContext) -> str:
    """Tenant-scoped key; message text is whitespace-normalized so trivial differences still hit. The cache
    stores it under its `key_prefix`."""
    options = params.options
    material = {
        "model": model,
        "messages": [(m.role, " ".join(m.text.split()), m.tool_call_id,
                      [c.model_dump() for c in m.tool_calls or ()]) for m in messages],
        "params": [params.temperature, params.max_tokens, options.top_p, options.stop, options.seed,
                   options.presence_penalty, options.frequency_penalty],
        "tools": [tool.model_dump() for tool in options.tools or ()],
        "knowledge": [(s.path, s.snippet) for s in context.knowledge],
        "language": context.language,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"llm:v2:{tenant_id}:{digest}"


@dataclass
class Lease:
    """The right to fill one key; `finish()` it with the answer, or None when there is none to cache.

    A shared lease is the single-flight leader (followers wait for it); an unshared one just goes upstream.
    """

    key: str
    cache: ResponseCache
    future: asyncio.Future[CachedAnswer | None] | None = None
    token: str | None = None
    done: bool = field(default=False)

    async def finish(self, answer: CachedAnswer | None) -> None:
        if self.done:
            return
        self.done = True
        if answer is not None:
            await self.cache.put(self.key, answer)
        if self.future is not None:
            if not self.future.done():
                self.future.set_result(answer)
            if self.cache.flights.get(self.key) is self.future:
                del self.cache.flights[self.key]
        await self.cache.release(self.key, self.token)


class ResponseCache:
    def __init__(self, cache: Cache, ttl_s: int, *, redis: SharedRedis | None = None, key_prefix: str = "supportbot:",
                 lock_ttl_s: float = 60.0, poll_s: float = 0.02) -> None:
        self.cache = cache
        self.ttl_s = ttl_s
        self.redis = redis
        self.key_prefix = key_prefix
        self.lock_ttl_s = lock_ttl_s
        self.poll_s = poll_s
        self.flights: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._release = redis.client.register_script(_RELEASE) if redis is not None else None

    @property
    def available(self) -> bool:
        """False while the cache backend is failing (requests then bypass it)."""
        return getattr(self.cache, "healthy", True)

    def stored_key(self, key: str) -> str:
        """Where `key`'s entry lives (its single-flight lock: with `:lock` after it)."""
        return self.key_prefix + key

    async def get(self, key: str) -> CachedAnswer | None:
        raw = await self.cache.get(self.stored_key(key))
        if raw is None:
            return None
        try:
            return CachedAnswer.model_validate_json(raw)
        except ValueError:
            await self.cache.delete(self.stored_key(key))
            return None

    async def put(self, key: str, answer: CachedAnswer) -> None:
        await self.cache.set(self.stored_key(key), answer.model_dump_json().encode(), self.ttl_s)

    async def join(self, key: str, *, wait_s: float | None = None) -> CachedAnswer | Lease:
        """The answer an identical request is producing for `key`, or a `Lease` to produce it; an identical
        request is waited for at most `wait_s` (and `lock_ttl_s`), then this one goes upstream itself."""
        loop = asyncio.get_running_loop()
        wait = self.lock_ttl_s if wait_s is None else max(0.0, min(self.lock_ttl_s, wait_s))
        deadline = loop.time() + wait
        if (flight := self.flights.get(key)) is not None:  # a leader in this process
            try:
                answer = await asyncio.wait_for(asyncio.shield(flight), wait)
            except TimeoutError:
                answer = None
            return answer if answer is not None else Lease(key, self)
        future: asyncio.Future[CachedAnswer | None] = loop.create_future()
        self.flights[key] = future
        token = uuid.uuid4().hex
        if await self._lock(key, token):
            lease = Lease(key, self, future, token)
            if (hit := await self.get(key)) is not None:  # filled by another replica since our miss
                lease.done = True
                future.set_result(hit)
                del self.flights[key]
                await self.release(key, token)
                return hit
            return lease
        answer = await self._await_other_replica(key, deadline)  # in-process followers wait on `future`
        future.set_result(answer)
        del self.flights[key]
        return answer if answer is not None else Lease(key, self)

    async def _lock(self, key: str, token: str) -> bool:
        """Take the cross-replica lock; True also when there is no Redis (up) to share it with."""
        if self.redis is None or not self.redis.up:
            return True
        try:
            return bool(await self.redis.client.set(f"{self.stored_key(key)}:lock", token, nx=True,
                                                    px=int(self.lock_ttl_s * 1000)))
        except REDIS_ERRORS as exc:
            self.redis.failed(exc)
            return True

    async def release(self, key: str, token: str | None) -> None:
        # While Redis is down the lock is left to expire (lock_ttl_s): releasing would wait for a timeout.
        if token is None or self._release is None or self.redis is None or not self.redis.up:
            return
        try:
            await self._release(keys=[f"{self.stored_key(key)}:lock"], args=[token])
        except REDIS_ERRORS as exc:
            self.redis.failed(exc)

    async def _await_other_replica(self, key: str, deadline: float) -> CachedAnswer | None:
        """Poll for the entry another replica is filling; None once its lock is gone without one."""
        loop = asyncio.get_running_loop()
        assert self.redis is not None
        while loop.time() < deadline:
            if (hit := await self.get(key)) is not None:
                return hit
            if not self.redis.up:
                return None
            try:
                if not await self.redis.client.exists(f"{self.stored_key(key)}:lock"):
                    return await self.get(key)
            except REDIS_ERRORS as exc:
                self.redis.failed(exc)
                return None
            await asyncio.sleep(self.poll_s)
        return None
