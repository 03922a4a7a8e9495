"""Redis shared by every replica when `REDIS_URL` is set, with in-process fallbacks while it does not answer.

`SharedRedis` is a process's one Redis client and knows whether Redis answers now. The first failed command
marks it down; from then on every user of it (the cache below, conversation locks, the LLM response cache's
single flight, budgets, breakers) takes its in-process path without touching Redis, so no request waits for
a connect timeout, while a background task pings with a short backoff. When a ping answers, recovery hooks
run (the cache writes back what it kept in-process meanwhile) and Redis is used again. A service started
while Redis is down starts this way too: it never settles for in-process state for good.

`open_redis` builds it (None without `REDIS_URL`: in-process only, one warning), `shared_cache` the
key-value cache on top: Redis while it answers, else an in-process LRU. Cache failures never fail a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

REDIS_ERRORS = (RedisError, OSError)
"""What a Redis command raises when Redis is away (a refused or cut connection, a timeout)."""

RecoveryHook = Callable[[], Awaitable[bool]]
"""Runs when Redis answers again, before it is used; returns whether it had anything to do."""


class Cache(Protocol):
    backend: str
    healthy: bool
    """False while reads and writes are dropped (nothing to fall back on)."""

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def ping(self) -> None: ...
    async def aclose(self) -> None: ...


class SharedRedis:
    """One Redis client per process, whether Redis answers now, and the task that waits for it to come back."""

    def __init__(self, url: str, *, timeout_s: float = 1.0, retry_min_s: float = 0.2,
                 retry_max_s: float = 2.0) -> None:
        # One immediate retry of a refused or dropped connection (a pooled one that a restarted Redis closed),
        # none of a timeout, never redis-py's default of ten with backoff: a request must not wait seconds for
        # a Redis that is gone.
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
        self.up = False
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.probes = 0
        """Pings sent while Redis was down (the only Redis traffic then)."""
        self._hooks: list[RecoveryHook] = []
        self._down = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def on_recovery(self, hook: RecoveryHook) -> None:
        self._hooks.append(hook)

    async def start(self) -> None:
        """Ping once; if Redis does not answer, say so and keep trying in the background."""
        try:
            await self.client.ping()
            self.up = True
        except REDIS_ERRORS as exc:
            log.warning("REDIS_URL is set but Redis does not answer (%s); using in-process state and retrying "
                        "until it does", type(exc).__name__)
            self._down.set()
        self._task = asyncio.create_task(self._reconnect_forever(), name="redis-reconnect")

    def failed(self, exc: BaseException) -> None:
        """A command failed: use the in-process fallbacks until a ping answers again."""
        if not self.up:
            return
        self.up = False
        log.warning("redis unavailable (%s); using in-process state until it answers again", type(exc).__name__)
        self._down.set()

    async def check(self) -> None:
        """The readiness check: raises while Redis does not answer."""
        if not self.up:
            raise RedisConnectionError("redis does not answer")
        try:
            await self.client.ping()
        except REDIS_ERRORS as exc:
            self.failed(exc)
            raise

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.client.aclose()

    async def _reconnect_forever(self) -> None:
        while True:
            await self._down.wait()
            delay = self.retry_min_s
            while not self.up:
                await asyncio.sleep(delay)
                self.probes += 1
                try:
                    await self.client.ping()
                    await self._recover()
                except REDIS_ERRORS:
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                except Exception:  # a broken hook must not stop the reconnecting
                    log.exception("redis recovery hook failed")
                self._down.clear()
                self.up = True
                log.info("redis answers again; shared state is back in redis")

    async def _recover(self) -> None:
        # Until a whole pass finds nothing to do: the flip to `up` then follows with no await in between, so
        # nothing written in-process in the meantime is left behind.
        for _ in range(10):
            worked = False
            for hook in self._hooks:
                worked = await hook() or worked
            if not worked:
                return


class MemoryCache:
    """A bounded in-process LRU with per-key expiry; one per process, not shared by replicas."""

    backend = "memory"
    healthy = True

    def __init__(self, max_items: int = 10_000) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_items = max_items

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires_at, value = item
        if expires_at < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._items[key] = (time.monotonic() + ttl_s, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    def snapshot(self) -> list[tuple[str, bytes, float]]:
        """(key, value, seconds left) of every live entry."""
        now = time.monotonic()
        return [(key, value, expires_at - now) for key, (expires_at, value) in self._items.items()
                if expires_at > now]

    def discard(self, key: str, value: bytes) -> None:
        """Drop `key` if it still holds `value` (it was written elsewhere)."""
        item = self._items.get(key)
        if item is not None and item[1] is value:
            del self._items[key]

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._items.clear()


class FallbackCache:
    """Redis while it answers, else an in-process LRU; what was written in-process is written back to Redis
    (with the time it had left) when Redis returns, so a conversation's state survives the outage."""

    healthy = True

    def __init__(self, redis: SharedRedis, memory: MemoryCache | None = None) -> None:
        self.redis = redis
        self.memory = memory or MemoryCache()
        self._deleted: set[str] = set()
        redis.on_recovery(self._write_back)

    @property
    def backend(self) -> str:
        return "redis" if self.redis.up else "memory"

    async def get(self, key: str) -> bytes | None:
        if self.redis.up:
            try:
                value: bytes | None = await self.redis.client.get(key)
                return value
            except REDIS_ERRORS as exc:
                self.redis.failed(exc)
        return await self.memory.get(key)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if self.redis.up:
            try:
                await self.redis.client.set(key, value, ex=ttl_s)
                return
            except REDIS_ERRORS as exc:
                self.redis.failed(exc)
        await self.memory.set(key, value, ttl_s)
        self._deleted.discard(key)

    async def delete(self, key: str) -> None:
        if self.redis.up:
            try:
                await self.redis.client.delete(key)
                return
            except REDIS_ERRORS as exc:
                self.redis.failed(exc)
        await self.memory.delete(key)
        self._deleted.add(key)

    async def ping(self) -> None:
        await self.redis.check()

    async def aclose(self) -> None:
        await self.memory.aclose()

    async def _write_back(self) -> bool:
        entries = self.memory.snapshot()
        deleted = set(self._deleted)
        if not entries and not deleted:
            return False
        pipe = self.redis.client.pipeline(transaction=False)
        for key, value, left_s in entries:
            pipe.set(key, value, px=max(1, int(left_s * 1000)))
        if deleted:
            pipe.delete(*deleted)
        await pipe.execute()  # a failure leaves everything in place for the next attempt
        for key, value, _ in entries:
            self.memory.discard(key, value)
        self._deleted -= deleted
        log.info("in-process cache written back to redis", extra={"supportbot.count": len(entries)})
        return True


async def open_redis(redis_url: str | None) -> SharedRedis | None:
    """A started `SharedRedis` for `redis_url`, whether or not Redis answers yet; None (and one warning)
    without a URL."""
    if not redis_url:
        log.warning("REDIS_URL is not set; using in-process state (not shared between replicas)")
        return None
    redis = SharedRedis(redis_url)
    await redis.start()
    return redis


def shared_cache(redis: SharedRedis | None) -> Cache:
    """The key-value cache: through `redis` with an in-process fallback, or in-process only."""
    return FallbackCache(redis) if redis is not None else MemoryCache()
