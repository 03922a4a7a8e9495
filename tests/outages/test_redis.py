"""Redis absent when the services start, started later: they answer meanwhile (in-process state, without a
Redis timeout per request), /readyz says degraded, and once Redis answers the shared state is in Redis again.

The test Redis is shared and is never stopped: the services reach it through a port that first has nothing
behind it, then a listener that never answers, then a proxy to the real one.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from supportbot.cache import SharedRedis
from tests.fake_openai import FakeOpenAI
from tests.helpers import TcpProxy, free_port
from tests.outages.support import Blackhole
from tests.stack import Stack, in_process_stack

pytestmark = pytest.mark.anyio

QUESTION = "How long does standard shipping take?"


def shared_redis(stack: Stack) -> list[SharedRedis]:
    """The dialogue's and the llm's Redis links."""
    links = [stack.apps["dialogue"].state.dialogue.state.redis, stack.apps["llm"].state.generator.cache.redis]
    assert all(isinstance(link, SharedRedis) for link in links)
    return links


async def readiness(stack: Stack) -> tuple[int, dict[str, object]]:
    response = await stack.client.get("/readyz")
    return response.status_code, response.json()


async def test_redis_absent_at_start_is_used_as_soon_as_it_answers(
        sqlite_url: str, data_dir: Path, model_cache_dir: Path, fake_openai: FakeOpenAI, redis_url: str,
        redis_prefix: str) -> None:
    target = Redis.from_url(redis_url).connection_pool.connection_kwargs
    port = free_port()  # reserved, nothing listens there yet
    url = f"redis://127.0.0.1:{port}/{target.get('db', 0)}"
    direct = Redis.from_url(redis_url)
    proxy: TcpProxy | None = None
    try:
        async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir,
                                    redis_url=url, redis_key_prefix=redis_prefix,
                                    openai_base_url=fake_openai.base_url, openai_api_key="sk-test") as stack:
            links = shared_redis(stack)
            assert not any(link.up for link in links)
            code, health = await readiness(stack)
            assert code == 200 and health["status"] == "degraded"
            assert {"dialogue.redis", "dialogue.llm.redis"} <= set(health["degraded"])  # type: ignore[arg-type]

            # Something takes the port but never answers: a request that touched Redis would now wait for a
            # timeout and open a connection there. Only the background pings may.
            hole = await Blackhole().start(port)
            probes = sum(link.probes for link in links)
            conversation_id, other = await stack.new_conversation(), await stack.new_conversation()
            answers = [await stack.say(conversation_id, text) for text in (QUESTION, "hello", "thank you")]
            assert answers[0]["provider"] == "openai"
            assert (await stack.say(other, QUESTION))["provider"] == "openai"
            assert fake_openai.calls == 1, "the same question again came from the (in-process) cache"
            pinged = sum(link.probes for link in links) - probes
            # a ping opens one connection (two if retried); a request that touched Redis would open its own
            assert hole.connections <= 2 * pinged + 2, (hole.connections, pinged)
            await hole.stop()
            assert await direct.get(f"{redis_prefix}dialogue:state:{conversation_id}") is None

            proxy = await TcpProxy(target.get("host", "127.0.0.1"), int(target.get("port", 6379))).start(port)
            deadline = time.monotonic() + 10
            while (await readiness(stack))[1]["status"] != "ok":
                assert time.monotonic() < deadline, "readiness did not come back to ok within 10 s"
                await asyncio.sleep(0.2)
            assert all(link.up for link in links)

            # What was kept in-process meanwhile is in Redis now, under the test's prefix.
            state = await direct.get(f"{redis_prefix}dialogue:state:{conversation_id}")
            assert state is not None and json.loads(state)["turn_count"] == 3
            assert await direct.keys(f"{redis_prefix}llm:v2:*"), "the response-cache entry"
            # And Redis is used again: state, locks, breakers.
            await stack.say(conversation_id, "hello again")
            assert json.loads(await direct.get(f"{redis_prefix}dialogue:state:{conversation_id}"))["turn_count"] == 4
            fake_openai.fault = "500"
            failed_over = await stack.say(conversation_id, "How long does express shipping take?")
            assert failed_over["provider"] != "openai"
            assert await direct.exists(f"{redis_prefix}llm:breaker:openai:failures"), "the breaker counts in Redis"
            assert all(key.startswith(redis_prefix.encode()) for key in await direct.keys(f"*{conversation_id}*"))
    finally:
        if proxy is not None:
            await proxy.stop()
        await direct.aclose()


async def test_a_request_while_redis_does_not_answer_waits_for_no_timeout() -> None:
    """The first failure marks Redis down; after it no command goes to Redis, only the background ping."""
    from supportbot.cache import open_redis, shared_cache

    port = free_port()
    hole = await Blackhole().start(port)
    redis = await open_redis(f"redis://127.0.0.1:{port}/0")
    assert redis is not None and not redis.up
    cache = shared_cache(redis)
    try:
        connections, probes = hole.connections, redis.probes
        for i in range(50):
            await cache.set(f"k{i}", b"v", ttl_s=10)
            assert await cache.get(f"k{i}") == b"v"
        assert hole.connections - connections <= 2 * (redis.probes - probes) + 2
    finally:
        await cache.aclose()
        await redis.aclose()
        await hole.stop()
