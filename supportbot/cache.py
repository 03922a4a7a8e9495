"""Key-value cache: Redis when `REDIS_URL` is set and answers, else an in-process LRU.

Cache failures never fail a request: a Redis that goes away makes reads miss and writes no-ops, logged at
most once a minute.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)


class Cache(Protocol):
    backend: str
    healthy: bool
    """False after an operation failed, until one succeeds again."""

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def ping(self) -> None: ...
    async def aclose(self) -> None: ...


class MemoryCache:
    """A bounded in-process LRU with per-key expiry; one per process, not shared by replicas."""

    backend = "memory"
    healthy = True

    def __init__(self, max_items: int = 10_000) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_items = max_items

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

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        self._items.clear()


class RedisCache:
    """Redis-backed cache shared by every replica."""

    backend = "redis"

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.healthy = True
        self._last_warning = 0.0

    def _warn(self, exc: Exception) -> None:
        self.healthy = False
        now = time.monotonic()
        if now - self._last_warning > 60:
            self._last_warning = now
            log.warning("redis unavailable, cache bypassed: %s", type(exc).__name__)

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self.client.get(key)
            self.healthy = True
            return value
        except (RedisError, OSError) as exc:
            self._warn(exc)
            return None

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        try:
            await self.client.set(key, value, ex=ttl_s)
            self.healthy = True
        except (RedisError, OSError) as exc:
            self._warn(exc)

    async def delete(self, key: str) -> None:
        try:
            await self.client.delete(key)
        except (RedisError, OSError) as exc:
            self._warn(exc)

    async def ping(self) -> None:
        await self.client.ping()

    async def aclose(self) -> None:
        await self.client.aclose()


async def open_cache(redis_url: str | None) -> Cache:
    """Redis at `redis_url` if it answers now; otherwise an in-process cache and one clear warning."""
    if redis_url:
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            await client.ping()
            return RedisCache(client)
        except (RedisError, OSError) as exc:
            await client.aclose()
            log.warning("REDIS_URL is set but Redis does not answer (%s); using an in-process cache",
                        type(exc).__name__)
            return MemoryCache()
    log.warning("REDIS_URL is not set; using an in-process cache (not shared between replicas)")
    return MemoryCache()
