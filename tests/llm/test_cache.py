"""The Redis response cache: tenant scoping, opt-in for temperature > 0, single flight, streamed replay."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis

from tests.fake_openai import FakeOpenAI
from tests.helpers import TcpProxy
from tests.llm.support import ask, llm_app, settings, sse_events, usage_rows

pytestmark = pytest.mark.anyio


async def test_concurrent_identical_misses_make_one_upstream_call_across_replicas(
        sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI, redis_url: str) -> None:
    fake_openai.delay_s = 0.3
    config = settings(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url)
    async with llm_app(config) as (_, a), llm_app(config) as (_, b):
        responses = await asyncio.gather(*(client.post("/v1/generate", json=ask())
                                           for client in [a, b] * 6))
    assert fake_openai.calls == 1
    statuses = sorted(r.headers["X-Cache"] for r in responses)
    assert statuses == ["hit"] * 11 + ["miss"]
    assert {r.json()["text"] for r in responses} == {fake_openai.reply}
    rows = await usage_rows(sqlite_url)
    assert len(rows) == 12 and sum(r.prompt_tokens for r in rows) == 57  # hits cost nothing upstream


async def test_streamed_answer_is_cached_whole_and_replayed_in_chunks(sqlite_url: str, data_dir: Path,
                                                                      fake_openai: FakeOpenAI, redis_url: str) -> None:
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url)) as (_, client):
        first = await client.post("/v1/generate", json=ask(stream=True))
        second = await client.post("/v1/generate", json=ask(stream=True))
        plain = await client.post("/v1/generate", json=ask())
    assert first.headers["X-Cache"] == "miss" and second.headers["X-Cache"] == "hit"
    assert plain.headers["X-Cache"] == "hit" and plain.json()["text"] == fake_openai.reply
    deltas = [e["delta"] for e in sse_events(second.text) if isinstance(e, dict) and "delta" in e]
    assert deltas == fake_openai.pieces() and len(deltas) > 3  # the original chunks, not one blob
    final = sse_events(second.text)[-2]["response"]
    assert final["cached"] is True and final["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert fake_openai.calls == 1


async def test_temperature_above_zero_is_cached_only_for_tenants_that_opt_in(
        sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI, redis_url: str) -> None:
    config = settings(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url,
                      cache_nondeterministic_tenants="acme,foo")
    async with llm_app(config) as (_, client):
        demo = [await client.post("/v1/generate", json=ask(temperature=0.8)) for _ in range(2)]
        acme = [await client.post("/v1/generate", json=ask(temperature=0.8, tenant="acme")) for _ in range(2)]
    assert [r.headers["X-Cache"] for r in demo] == ["bypass", "bypass"]
    assert [r.headers["X-Cache"] for r in acme] == ["miss", "hit"]
    assert ":acme:" in acme[1].headers["X-Cache-Key"]
    assert fake_openai.calls == 3


async def test_generation_parameters_are_part_of_the_key(sqlite_url: str, data_dir: Path,
                                                         fake_openai: FakeOpenAI, redis_url: str) -> None:
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url)) as (_, client):
        keys = {(await client.post("/v1/generate", json=ask(**extra))).headers["X-Cache-Key"]
                for extra in ({}, {"max_tokens": 20}, {"top_p": 0.5}, {"stop": ["\n"]}, {"seed": 7})}
        history = ask()
        history["messages"].insert(1, {"role": "assistant", "content": "Hello!"})
        keys.add((await client.post("/v1/generate", json=history)).headers["X-Cache-Key"])
    assert len(keys) == 6 and fake_openai.calls == 6
    sent = fake_openai.requests
    assert sent[2]["top_p"] == 0.5 and sent[3]["stop"] == ["\n"] and sent[4]["seed"] == 7


async def test_redis_going_down_caches_in_process_and_requests_still_succeed(
        sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI, redis_url: str) -> None:
    target = Redis.from_url(redis_url).connection_pool.connection_kwargs
    proxy = await TcpProxy(target.get("host", "127.0.0.1"), target.get("port", 6379)).start()
    db = target.get("db", 0)
    config = settings(sqlite_url, data_dir, fake=fake_openai, redis_url=f"redis://127.0.0.1:{proxy.port}/{db}",
                      breaker_failures=2)
    async with llm_app(config) as (_, client):
        assert (await client.post("/v1/generate", json=ask())).headers["X-Cache"] == "miss"
        await proxy.stop()
        # Redis' entry is out of reach: the first is a miss again, answered and kept in-process, the second a hit.
        during = [await client.post("/v1/generate", json=ask(stream=stream)) for stream in (False, True)]
    assert [r.status_code for r in during] == [200, 200]
    assert [r.headers["X-Cache"] for r in during] == ["miss", "hit"]
    assert during[0].json()["provider"] == "openai" and fake_openai.calls == 2
