from __future__ import annotations

import asyncio
import logging

import pytest

from supportbot.cache import MemoryCache, RedisCache, open_cache
from tests.helpers import TcpProxy

pytestmark = pytest.mark.anyio


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


async def test_real_redis_round_trip(redis_url: str) -> None:
    cache = await open_cache(redis_url)
    try:
        assert isinstance(cache, RedisCache)
        await cache.set("supportbot:test:k", b"value", ttl_s=30)
        assert await cache.get("supportbot:test:k") == b"value"
        assert 0 < await cache.client.ttl("supportbot:test:k") <= 30
        await cache.delete("supportbot:test:k")
        assert await cache.get("supportbot:test:k") is None
    finally:
        await cache.aclose()


async def test_unreachable_redis_falls_back_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cache = await open_cache("redis://127.0.0.1:1/0")
    assert isinstance(cache, MemoryCache)
    warnings = [r for r in caplog.records if "Redis does not answer" in r.getMessage()]
    assert len(warnings) == 1


async def test_no_redis_url_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cache = await open_cache(None)
    assert isinstance(cache, MemoryCache)
    assert sum("REDIS_URL is not set" in r.getMessage() for r in caplog.records) == 1


async def test_redis_going_away_is_bypassed_not_raised(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    proxy = await TcpProxy("127.0.0.1", 6379).start()
    cache = await open_cache(f"redis://127.0.0.1:{proxy.port}/15")
    assert isinstance(cache, RedisCache)
    await cache.set("k", b"v", ttl_s=10)
    assert await cache.get("k") == b"v"
    await proxy.stop()  # Redis "dies" under a live client
    with caplog.at_level(logging.WARNING):
        await cache.set("k", b"v", ttl_s=10)
        assert await cache.get("k") is None
    assert any("cache bypassed" in r.getMessage() for r in caplog.records)
    await cache.aclose()
