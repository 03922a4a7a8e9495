"""Erasing a conversation's LLM data (cached replies, the conversation id on usage rows) and the usage report."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.fake_openai import FakeOpenAI
from tests.helpers import TcpProxy, redis_keys
from tests.llm.support import ask, llm_app, settings, usage_rows

pytestmark = pytest.mark.anyio


def turn(conversation_id: str, text: str, tenant: str = "demo") -> dict[str, Any]:
    return {**ask(text, tenant=tenant), "conversation_id": conversation_id}


async def test_erase_deletes_the_cached_replies_and_detaches_usage_rows(
        database_url: str, data_dir: Path, fake_openai: FakeOpenAI, redis_url: str, redis_prefix: str) -> None:
    config = settings(database_url, data_dir, fake=fake_openai, redis_url=redis_url)
    async with llm_app(config) as (app, client):
        first = await client.post("/v1/generate", json=turn("conv_erased01", "Where is my order?"))
        again = await client.post("/v1/generate", json=turn("conv_erased01", "Where is my order?"))
        shared = await client.post("/v1/generate", json=turn("conv_sharing01", "Where is my order?"))
        kept = await client.post("/v1/generate", json=turn("conv_kept0001", "Do you ship to Norway?"))
        assert [r.headers["X-Cache"] for r in (first, again, shared, kept)] == ["miss", "hit", "hit", "miss"]
        await app.state.recorder.flush()
        erased_key = redis_prefix + first.headers["X-Cache-Key"]
        kept_key = redis_prefix + kept.headers["X-Cache-Key"]
        assert {erased_key, kept_key} <= await redis_keys(redis_url, redis_prefix)

        other_tenant = await client.delete("/v1/conversations/conv_erased01", params={"tenant_id": "acme"})
        assert other_tenant.status_code == 200
        assert other_tenant.json() == {"conversation_id": "conv_erased01", "cache_entries": 0, "usage_rows": 0}
        assert erased_key in await redis_keys(redis_url, redis_prefix)

        erased = await client.delete("/v1/conversations/conv_erased01", params={"tenant_id": "demo"})
        assert erased.status_code == 200, erased.text
        assert erased.json() == {"conversation_id": "conv_erased01", "cache_entries": 1, "usage_rows": 2}
        left = await redis_keys(redis_url, redis_prefix)
        # The shared entry is gone too (another conversation asked the same): erasing is the safe choice.
        assert erased_key not in left and kept_key in left
        assert not any("conv_erased01" in key and key.endswith(":cache-keys") for key in left)

        after = await client.post("/v1/generate", json=turn("conv_sharing01", "Where is my order?"))
        assert after.headers["X-Cache"] == "miss"  # generated anew
        twice = await client.delete("/v1/conversations/conv_erased01", params={"tenant_id": "demo"})
        assert twice.json() == {"conversation_id": "conv_erased01", "cache_entries": 0, "usage_rows": 0}
        await app.state.recorder.flush()

    rows = await usage_rows(database_url)
    assert [r.conversation_id for r in rows] == [None, None, "conv_sharing01", "conv_kept0001", "conv_sharing01"]
    assert [r.prompt_tokens for r in rows[:2]] == [57, 0] and rows[0].completion_tokens == 11  # counts stay
    assert [r.cached for r in rows[:2]] == [False, True]


async def test_usage_still_queued_on_another_replica_loses_the_erased_conversation(
        sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI, redis_url: str) -> None:
    slow = settings(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url, usage_flush_interval_s=1.0)
    async with llm_app(slow) as (writer_app, writer), llm_app(settings(sqlite_url, data_dir, fake=fake_openai,
                                                                      redis_url=redis_url)) as (_, eraser):
        answered = await writer.post("/v1/generate", json=turn("conv_inflight1", "Cancel my order"))
        assert answered.status_code == 200
        assert await usage_rows(sqlite_url) == []  # still in the writer's queue
        erased = await eraser.delete("/v1/conversations/conv_inflight1", params={"tenant_id": "demo"})
        assert erased.json()["cache_entries"] == 1  # the index is in Redis, shared
        await writer_app.state.recorder.flush()
    rows = await usage_rows(sqlite_url)
    assert len(rows) == 1 and rows[0].conversation_id is None and rows[0].prompt_tokens == 57


async def test_erase_while_redis_is_down_is_refused_and_finished_by_a_retry(
        sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI, redis_url: str, redis_prefix: str) -> None:
    target = Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = await TcpProxy(target.get("host", "127.0.0.1"), target.get("port", 6379)).start()
    port = proxy.port
    config = settings(sqlite_url, data_dir, fake=fake_openai,
                      redis_url=f"redis://127.0.0.1:{port}/{target.get('db', 0)}")
    async with llm_app(config) as (app, client):
        first = await client.post("/v1/generate", json=turn("conv_redisdown", "Where is my order?"))
        await app.state.recorder.flush()
        await proxy.stop()
        refused = await client.delete("/v1/conversations/conv_redisdown", params={"tenant_id": "demo"})
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        assert "redis" in refused.json()["error"]["message"]
        assert (await usage_rows(sqlite_url))[0].conversation_id == "conv_redisdown"  # nothing half-done
        proxy = await TcpProxy(target.get("host", "127.0.0.1"), target.get("port", 6379)).start(port)
        redis = app.state.generator.cache.redis
        for _ in range(100):
            if redis.up:
                break
            await asyncio.sleep(0.05)
        retried = await client.delete("/v1/conversations/conv_redisdown", params={"tenant_id": "demo"})
        assert retried.status_code == 200, retried.text
        assert retried.json()["cache_entries"] == 1 and retried.json()["usage_rows"] == 1
    await proxy.stop()
    assert redis_prefix + first.headers["X-Cache-Key"] not in await redis_keys(redis_url, redis_prefix)
    assert (await usage_rows(sqlite_url))[0].conversation_id is None


async def test_without_redis_the_in_process_index_is_erased(sqlite_url: str, data_dir: Path,
                                                            fake_openai: FakeOpenAI) -> None:
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai)) as (_, client):
        await client.post("/v1/generate", json=turn("conv_memory01", "Where is my order?"))
        erased = await client.delete("/v1/conversations/conv_memory01", params={"tenant_id": "demo"})
        assert erased.json()["cache_entries"] == 1
        again = await client.post("/v1/generate", json=turn("conv_memory02", "Where is my order?"))
        assert again.headers["X-Cache"] == "miss"


async def test_usage_report_per_provider_and_model(sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI) -> None:
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai)) as (app, client):
        for conversation in ("conv_usage001", "conv_usage002"):
            await client.post("/v1/generate", json=turn(conversation, "Where is my order?"))
        await client.post("/v1/generate", json=turn("conv_usage003", "Hi", tenant="acme"))
        await app.state.recorder.flush()
        report = await client.get("/v1/usage", params={"tenant_id": "demo"})
        future = await client.get("/v1/usage", params={"tenant_id": "demo", "since": "2999-01-01"})
        bad = await client.get("/v1/usage", params={"tenant_id": "demo", "since": "last tuesday"})
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["tenant_id"] == "demo" and body["since"].endswith("T00:00:00Z")
    assert body["by_provider_model"] == [{"provider": "openai", "model": "gpt-4o-mini", "requests": 2,
                                          "cached_requests": 1, "prompt_tokens": 57, "completion_tokens": 11,
                                          "cost_usd": pytest.approx((57 * 0.15 + 11 * 0.60) / 1e6)}]
    assert body["totals"]["requests"] == 2
    assert future.json()["by_provider_model"] == [] and future.json()["totals"]["requests"] == 0
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "since"
