from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from supportbot.cache import FallbackCache, MemoryCache, SharedRedis, open_redis, shared_cache
from tests.helpers import TcpProxy, free_port

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def proxied(redis_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A TcpProxy in front of the test Redis, and the URL that goes through it (same database)."""
    target = aioredis.Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = await TcpProxy(target.get("host", "127.0.0.1"), int(target.get("port", 6379))).start()
    try:
        yield proxy, f"redis://127.0.0.1:{proxy.port}/{target.get('db', 0)}"
    finally:
        await proxy.stop()  # stopping a stopped proxy is harmless


async def wait_up(redis: SharedRedis, within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not redis.up:
            await asyncio.sleep(0.05)


async def test_memory_cache_expires_and_evicts() -> None:
    cache = MemoryCache(max_items=2)
    await cache.set("a", b"1", ttl_s=60)
    await cache.set("b", b"2", ttl_s=60)
    assert await cache.get("a") == b"1"  # a is now the most recently used
    await cache.set("c", b"3", ttl_s=60)
    assert await cache.get("b") is None
    assert await cache.get("a") == b"1"
    await cache.set("short", b"x", ttl_s=0)
    await asyncio.sleep(0.01)
    assert await cache.get("short") is None


async def test_real_redis_round_trip(redis_url: str, redis_prefix: str) -> None:
    redis = await open_redis(redis_url)
    assert redis is not None and redis.up
    cache = shared_cache(redis)
    key = f"{redis_prefix}test:k"
    try:
        assert isinstance(cache, FallbackCache) and cache.backend == "redis"
        await cache.set(key, b"value", ttl_s=30)
        assert await cache.get(key) == b"value"
        assert 0 < await redis.client.ttl(key) <= 30
        await cache.delete(key)
        assert await cache.get(key) is None
        await redis.check()
    finally:
        await cache.aclose()
        await redis.aclose()


async def test_redis_down_at_start_is_retried_not_given_up(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        redis = await open_redis(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    assert redis is not None and not redis.up
    try:
        warnings = [r for r in caplog.records if "Redis does not answer" in r.getMessage()]
        assert len(warnings) == 1
        cache = shared_cache(redis)
        assert cache.backend == "memory"
        await cache.set("k", b"v", ttl_s=10)  # in-process meanwhile
        assert await cache.get("k") == b"v"
        with pytest.raises(RedisError):
            await redis.check()
        probes = redis.probes
        await asyncio.sleep(0.5)
        assert redis.probes > probes, "it keeps trying"
    finally:
        await redis.aclose()


async def test_no_redis_url_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        redis = await open_redis(None)
    assert redis is None
    assert isinstance(shared_cache(redis), MemoryCache)
    assert sum("REDIS_URL is not set" in r.getMessage() for r in caplog.records) == 1


async def test_redis_going_away_falls_back_in_process_and_writes_back_when_it_returns(
        redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    kept, written, dropped = (f"{redis_prefix}{name}" for name in ("kept", "written", "dropped"))
    direct = aioredis.Redis.from_url(redis_url)
    async with proxied(redis_url) as (proxy, url):
        redis = await open_redis(url)
        assert redis is not None and redis.up
        cache = shared_cache(redis)
        try:
            await cache.set(kept, b"before", ttl_s=60)
            await cache.set(dropped, b"before", ttl_s=60)
            await proxy.stop()  # Redis "dies" under a live client
            with caplog.at_level(logging.WARNING):
                await cache.set(written, b"during", ttl_s=60)  # the first failure: noticed, then in-process
                assert not redis.up and cache.backend == "memory"
                assert await cache.get(written) == b"during"
                await cache.delete(dropped)
                with pytest.raises(RedisError):
                    await redis.check()
            assert sum("redis unavailable" in r.getMessage() for r in caplog.records) == 1
            assert await direct.get(written) is None

            await proxy.start(proxy.port)  # back on the same address
            await wait_up(redis)
            assert cache.backend == "redis"
            assert await direct.get(written) == b"during", "what was written in-process is in Redis now"
            assert 0 < await direct.ttl(written) <= 60
            assert await direct.get(dropped) is None, "and what was deleted is gone there too"
            assert await cache.get(kept) == b"before"
            await redis.check()
        finally:
            await cache.aclose()
            await redis.aclose()
            await direct.aclose()
