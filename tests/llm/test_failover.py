"""Retries, circuit breakers (shared through Redis) and failover against real loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI, ServerThread
from tests.llm.support import ask, generator, llm_app, settings, sse_events, usage_rows

pytestmark = pytest.mark.anyio


@pytest.fixture
def local_server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(reply="Local model says: 3 to 5 days.", prompt_tokens=40, completion_tokens=9)
    with ServerThread(fake.app()) as server:
        fake.port = server.port
        yield fake


async def test_429_is_retried_after_the_retry_after_it_asked_for(sqlite_url: str, data_dir: Path,
                                                                 fake_openai: FakeOpenAI) -> None:
    fake_openai.fault, fake_openai.fault_times, fake_openai.retry_after = "429", 1, "1"
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai, openai_max_retries=2)) as (_, client):
        body = (await client.post("/v1/generate", json=ask())).json()
    assert body["provider"] == "openai" and body["failover_reason"] is None
    assert fake_openai.calls == 2
    assert fake_openai.call_times[1] - fake_openai.call_times[0] >= 0.95  # backoff alone would be ~10 ms


async def test_a_longer_retry_after_than_we_wait_fails_over_at_once(sqlite_url: str, data_dir: Path,
                                                                    fake_openai: FakeOpenAI) -> None:
    fake_openai.fault, fake_openai.retry_after = "429", "120"
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai, openai_max_retries=3)) as (_, client):
        body = (await client.post("/v1/generate", json=ask())).json()
    assert body["provider"] == "offline" and body["failover_reason"] == "openai: http_429"
    assert fake_openai.calls == 1


async def test_5xx_is_retried_with_backoff_then_answers(sqlite_url: str, data_dir: Path,
                                                        fake_openai: FakeOpenAI) -> None:
    fake_openai.fault, fake_openai.fault_times = "500", 2
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai, openai_max_retries=2)) as (_, client):
        body = (await client.post("/v1/generate", json=ask())).json()
    assert body["provider"] == "openai" and fake_openai.calls == 3


async def test_hosted_outage_fails_over_to_the_local_server(sqlite_url: str, data_dir: Path,
                                                            fake_openai: FakeOpenAI, local_server: FakeOpenAI) -> None:
    fake_openai.fault = "500"
    config = settings(sqlite_url, data_dir, fake=fake_openai, local=local_server)
    async with llm_app(config) as (_, client):
        response = await client.post("/v1/generate", json=ask())
    body = response.json()
    assert body["provider"] == "local" and body["model"] == "llama-local"
    assert body["text"] == local_server.reply and body["failover_reason"] == "openai: http_500"
    assert response.headers["X-Supportbot-Failover-Reason"] == "openai: http_500"
    assert local_server.requests[0]["model"] == "llama-local"
    [row] = await usage_rows(sqlite_url)
    assert (row.provider, row.prompt_tokens, row.completion_tokens, row.outcome) == ("local", 40, 9, "failover")


async def test_breaker_opens_and_its_state_is_shared_through_redis(sqlite_url: str, data_dir: Path,
                                                                   fake_openai: FakeOpenAI, redis_url: str) -> None:
    fake_openai.fault = "500"
    config = settings(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url, breaker_failures=2,
                      breaker_window_s=10, breaker_open_s=0.6)
    async with llm_app(config) as (app_a, a), llm_app(config) as (app_b, b):
        breaker_a = generator(app_a).failover.links[0].breaker
        breaker_b = generator(app_b).failover.links[0].breaker
        assert generator(app_a) is not generator(app_b)
        for _ in range(2):
            assert (await a.post("/v1/generate", json=ask(cache=False))).json()["provider"] == "offline"
        assert await breaker_a.state() == "open" and await breaker_b.state() == "open"
        # Replica B never saw a failure, yet skips the provider: the breaker state is in Redis.
        skipped = (await b.post("/v1/generate", json=ask(cache=False))).json()
        assert skipped["failover_reason"] == "openai: circuit_open" and fake_openai.calls == 2

        fake_openai.fault, fake_openai.delay_s = None, 0.3
        await asyncio.sleep(0.7)
        # Half-open: of five concurrent requests on two replicas exactly one probes the provider.
        answers = await asyncio.gather(*(client.post("/v1/generate", json=ask(cache=False))
                                         for client in (a, b, a, b, a)))
        providers = sorted(r.json()["provider"] for r in answers)
        assert providers == ["offline"] * 4 + ["openai"] and fake_openai.calls == 3
        assert await breaker_b.state() == "closed"
        fake_openai.delay_s = 0
        assert (await b.post("/v1/generate", json=ask(cache=False))).json()["provider"] == "openai"


async def test_failed_probe_opens_the_breaker_again(sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.fault = "500"
    config = settings(sqlite_url, data_dir, fake=fake_openai, breaker_failures=1, breaker_open_s=0.3)
    async with llm_app(config) as (app, client):  # no Redis: the same state machine in process
        breaker = generator(app).failover.links[0].breaker
        await client.post("/v1/generate", json=ask(cache=False))
        assert await breaker.state() == "open"
        await asyncio.sleep(0.35)
        await client.post("/v1/generate", json=ask(cache=False))  # the probe, failing
        assert await breaker.state() == "open" and fake_openai.calls == 2
        await client.post("/v1/generate", json=ask(cache=False))
        assert fake_openai.calls == 2


async def test_stream_failing_before_its_first_token_fails_over_transparently(
        sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI, local_server: FakeOpenAI) -> None:
    fake_openai.fault = "stream_fail_first"
    config = settings(sqlite_url, data_dir, fake=fake_openai, local=local_server, openai_max_retries=1)
    async with llm_app(config) as (_, client):
        response = await client.post("/v1/generate", json=ask(stream=True))
    events = sse_events(response.text)
    assert response.status_code == 200 and response.headers["X-Supportbot-Provider"] == "local"
    assert "".join(e["delta"] for e in events if isinstance(e, dict) and "delta" in e) == local_server.reply
    final = events[-2]["response"]
    assert final["provider"] == "local" and final["failover_reason"] in ("openai: connection_error", "openai: stream_broken")
    assert events[-1] == "[DONE]" and fake_openai.calls == 2  # one retry, then failover
    assert local_server.requests[0]["stream_options"] == {"include_usage": True}
    [row] = await usage_rows(sqlite_url)
    assert (row.provider, row.prompt_tokens, row.completion_tokens, row.estimated) == ("local", 40, 9, False)


async def test_stream_cut_after_first_token_ends_cleanly_and_is_accounted(
        sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI, redis_url: str) -> None:
    fake_openai.fault, fake_openai.cut_after = "stream_cut", 3
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url)) as (_, client):
        response = await client.post("/v1/generate", json=ask(stream=True))
        fake_openai.fault = None
        again = await client.post("/v1/generate", json=ask(stream=True))
    events = sse_events(response.text)
    received = "".join(e["delta"] for e in events if isinstance(e, dict) and "delta" in e)
    assert response.status_code == 200 and events[-1] == "[DONE]"
    assert received == "".join(fake_openai.pieces()[:3])
    assert again.headers["X-Cache"] == "miss", "a cut stream is never cached"
    cut, complete = await usage_rows(sqlite_url)
    assert (cut.outcome, cut.estimated, cut.provider) == ("stream_cut", True, "openai")
    from services.llm.tokens import count_text
    assert cut.completion_tokens == count_text(received) and cut.prompt_tokens > 0
    assert (complete.outcome, complete.estimated, complete.prompt_tokens, complete.completion_tokens) == \
        ("ok", False, 57, 11)
