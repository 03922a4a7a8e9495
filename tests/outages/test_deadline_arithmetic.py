"""The deadline's arithmetic, hop by hop: the header read and refused, what a ServiceClient waits and tells,
and how failover fits attempts, retries and breakers into what is left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from gateway.app import turn_deadline
from services.llm.breaker import OPEN, CircuitBreaker
from services.llm.failover import OFFLINE_ATTEMPT_S, Failover, Link, RetryPolicy
from services.llm.providers.base import NO_OPTIONS, Delta, Generation, GenerationOptions, ProviderError, SamplingParams
from services.llm.providers.offline import OfflineResponder
from supportbot import deadline
from supportbot.contracts.llm import ChatMessage, GenerationContext
from supportbot.deadline import HEADER, DeadlineMiddleware
from supportbot.errors import DownstreamTimeout
from supportbot.http import DeadlinePassed, ServiceClient

pytestmark = pytest.mark.anyio

MESSAGES = [ChatMessage(role="user", content="Where is my parcel?")]
PARAMS = SamplingParams(temperature=0.0, max_tokens=64)


class Echo(BaseModel):
    deadline_ms: int | None


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.get("/left")
    async def left() -> Echo:
        remaining = deadline.remaining_s()
        return Echo(deadline_ms=None if remaining is None else round(remaining * 1000))

    return app


async def _get(app: object, headers: dict[str, str | bytes], path: str = "/left") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.get(path, headers=headers)


async def test_the_header_sets_the_requests_deadline_and_bad_values_are_refused_naming_it() -> None:
    app = DeadlineMiddleware(_echo_app(), max_s=60)
    assert (await _get(app, {})).json() == {"deadline_ms": None}
    left = (await _get(app, {HEADER: "1500"})).json()["deadline_ms"]
    assert 1400 <= left <= 1500
    clamped = (await _get(app, {HEADER: "999999999"})).json()["deadline_ms"]
    assert 59_000 <= clamped <= 60_000, "a deadline hours away is taken as the longest allowed"
    for bad in ("soon", "-5", "1.5", "", "١٢٣".encode()):
        refused = await _get(app, {HEADER: bad})
        assert refused.status_code == 400, bad
        assert refused.json()["error"]["field"] == HEADER and refused.json()["error"]["type"] == "bad_request"
    assert deadline.current() is None, "the request's deadline does not outlive it"


async def test_the_public_door_sets_its_own_turn_deadline_and_ignores_the_clients() -> None:
    app = _echo_app()

    @app.post("/v1/conversations/{conversation_id}/messages")
    async def turn(conversation_id: str) -> Echo:
        remaining = deadline.remaining_s()
        return Echo(deadline_ms=None if remaining is None else round(remaining * 1000))

    door = DeadlineMiddleware(app, deadline_for=turn_deadline(4.0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=door), base_url="http://gw") as client:
        sent = await client.post("/v1/conversations/c1/messages", headers={HEADER: "999999"})
        other = await client.get("/left", headers={HEADER: "1000"})
        bad = await client.post("/v1/conversations/c1/messages", headers={HEADER: "nonsense"})
    assert 3800 <= sent.json()["deadline_ms"] <= 4000, "the client's 999 s are ignored"
    assert other.json() == {"deadline_ms": None}, "only turns get the turn deadline"
    assert bad.status_code == 200, "the gateway does not read the header at all"


async def test_a_service_client_tells_what_is_left_and_waits_no_longer() -> None:
    seen: list[str | None] = []

    async def slow(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get(HEADER))
        await asyncio.sleep(5)
        return httpx.Response(200, json={"deadline_ms": 0})

    client = ServiceClient("nlp", "http://nlp", read_timeout_s=30, transport=httpx.MockTransport(slow),
                           deadline_margin_s=0.1)
    with deadline.within(0.6):
        started = time.monotonic()
        with pytest.raises(DownstreamTimeout) as cut:
            await client.get("/x", Echo)
        waited = time.monotonic() - started
    assert not isinstance(cut.value, DeadlinePassed), "it was sent and did not answer in time"
    assert 0.4 <= waited <= 0.8, waited
    told = int(seen[0] or 0)
    assert 400 <= told <= 500, "the downstream is told the time left less the caller's margin"

    with deadline.within(2.0):
        wait, told_s = client.time_limits(time_limit_s=0.5)
    assert wait == told_s == 0.5, "a call's own limit, inside the deadline: the caller waits what it tells"
    assert client.time_limits() is None, "no deadline, no limit: the client's own timeouts"

    with deadline.within(0.005):
        with pytest.raises(DeadlinePassed):
            await client.get("/x", Echo)
    assert len(seen) == 1, "with no time left the call is not sent"
    await client.aclose()


async def test_a_grace_lets_the_caller_wait_past_the_deadline_while_telling_the_deadline() -> None:
    client = ServiceClient("dialogue", "http://d", read_timeout_s=30, deadline_margin_s=-1.0)
    with deadline.within(3.0):
        wait, told = client.time_limits()
    assert 3.8 <= wait <= 4.0 and 2.8 <= told <= 3.0
    await client.aclose()


class Scripted:
    """A provider whose attempts follow a script: "hang", "fail[:<retry after>]" (a retryable 500),
    "slow:<s>" (a timeout of its own after <s> seconds) or "ok"; records each attempt's start and end."""

    cacheable = True

    def __init__(self, name: str, script: list[str]) -> None:
        self.name = name
        self.model = f"{name}-model"
        self.script = script
        self.attempts: list[tuple[float, float]] = []

    async def generate(self, messages: list[ChatMessage], context: GenerationContext, *, temperature: float,
                       max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> Generation:
        step = self.script[min(len(self.attempts), len(self.script) - 1)]
        started = time.monotonic()
        try:
            if step == "hang":
                await asyncio.sleep(3600)
            if step.startswith("fail"):
                retry_after = float(step.split(":")[1]) if ":" in step else None
                raise ProviderError("http_500", retryable=True, retry_after=retry_after)
            if step.startswith("slow:"):
                await asyncio.sleep(float(step.split(":")[1]))
                raise ProviderError("timeout", retryable=True)
            return Generation(text="from " + self.name, prompt_tokens=5, completion_tokens=3, model=self.model)
        finally:
            self.attempts.append((started, time.monotonic()))

    async def stream(self, messages: list[ChatMessage], context: GenerationContext, *, temperature: float,
                     max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> AsyncIterator[Delta]:
        generation = await self.generate(messages, context, temperature=temperature, max_tokens=max_tokens)
        yield Delta(text=generation.text)

    async def aclose(self) -> None:
        return None


def _link(provider: object, *, retries: int, min_attempt_s: float, failures: int = 5) -> Link:
    breaker = CircuitBreaker(getattr(provider, "name"), redis=None, failures=failures, window_s=30, open_s=30)
    policy = RetryPolicy(retries, base_s=0.0, max_wait_s=1.0)
    return Link(provider, breaker, policy, min_attempt_s)  # type: ignore[arg-type]


def _offline() -> Link:
    return _link(OfflineResponder(), retries=0, min_attempt_s=OFFLINE_ATTEMPT_S)


async def _generate(failover: Failover, seconds: float) -> tuple[str, list[str], float]:
    started = time.monotonic()
    answer = await failover.generate(failover.links, MESSAGES, GenerationContext(), PARAMS,
                                     deadline=started + seconds)
    return answer.provider.name, answer.reasons, time.monotonic() - started


async def test_a_hanging_provider_is_cut_in_time_for_the_offline_answer_without_a_retry() -> None:
    hosted = Scripted("openai", ["hang"])
    failover = Failover([_link(hosted, retries=2, min_attempt_s=0.2), _offline()])
    provider, reasons, took = await _generate(failover, 1.0)
    assert provider == "offline" and reasons == ["openai: deadline"]
    assert took < 1.0, "answered before the caller's deadline"
    assert len(hosted.attempts) == 1, "no retry once what is left cannot hold one"
    first = hosted.attempts[0][1] - hosted.attempts[0][0]
    assert 1.0 - OFFLINE_ATTEMPT_S - 0.15 <= first <= 1.0 - OFFLINE_ATTEMPT_S + 0.05, first


async def test_attempt_timeouts_shrink_to_what_is_left_and_a_retry_that_cannot_fit_is_skipped() -> None:
    hosted = Scripted("openai", ["slow:0.6"])
    failover = Failover([_link(hosted, retries=5, min_attempt_s=0.2), _offline()])
    provider, reasons, took = await _generate(failover, 1.6)
    durations = [end - start for start, end in hosted.attempts]
    assert provider == "offline" and took < 1.6
    # 0.6 s, 0.6 s, then the rest of 1.55 s (about 0.35 s): cut at the deadline, never a fourth.
    assert len(durations) == 3, durations
    assert durations[0] >= 0.55 and durations[1] >= 0.55
    assert durations[2] < 0.5, "the last attempt got only what was left"
    assert reasons == ["openai: deadline"]

    asks_to_wait = Scripted("openai", ["fail:0.7"])
    failover = Failover([_link(asks_to_wait, retries=5, min_attempt_s=0.2), _offline()])
    provider, reasons, took = await _generate(failover, 0.8)
    assert provider == "offline" and reasons == ["openai: http_500"]
    assert len(asks_to_wait.attempts) == 1 and took < 0.3, "no sleep for a retry that could not fit after it"


async def test_a_provider_with_too_little_time_is_skipped_and_its_breaker_not_blamed() -> None:
    hosted = Scripted("openai", ["ok"])
    link = _link(hosted, retries=2, min_attempt_s=1.0, failures=1)
    failover = Failover([link, _offline()])
    provider, reasons, _ = await _generate(failover, 0.5)
    assert provider == "offline" and reasons == ["openai: no_time"] and hosted.attempts == []
    assert await link.breaker.state() == "closed"
    provider, reasons, _ = await _generate(failover, 5.0)
    assert provider == "openai" and reasons == []


async def test_the_next_provider_gets_its_share_before_the_offline_answer() -> None:
    hosted, local = Scripted("openai", ["hang"]), Scripted("local", ["ok"])
    failover = Failover([_link(hosted, retries=2, min_attempt_s=0.3), _link(local, retries=1, min_attempt_s=0.5),
                         _offline()])
    provider, reasons, took = await _generate(failover, 1.5)
    assert provider == "local" and reasons == ["openai: deadline"]
    cut = hosted.attempts[0][1] - hosted.attempts[0][0]
    assert cut <= 1.5 - 0.5 - OFFLINE_ATTEMPT_S + 0.05, "openai kept back what local and offline need"
    assert took < 1.5


async def test_deadline_cut_attempts_open_the_breaker_in_seconds() -> None:
    hosted = Scripted("openai", ["hang"])
    link = _link(hosted, retries=2, min_attempt_s=0.1, failures=3)
    failover = Failover([link, _offline()])
    started = time.monotonic()
    results = await asyncio.gather(*(_generate(failover, 0.5) for _ in range(3)))
    assert all(provider == "offline" for provider, _, _ in results)
    assert await link.breaker.state() == OPEN
    assert time.monotonic() - started < 1.5, "three cut requests, under a second: open"
    provider, reasons, took = await _generate(failover, 0.5)
    assert provider == "offline" and reasons == ["openai: circuit_open"] and took < 0.1
    assert len(hosted.attempts) == 3, "an open breaker sends nothing to the hanging provider"


async def test_no_deadline_keeps_the_providers_own_timeouts_and_retries() -> None:
    hosted = Scripted("openai", ["fail", "fail", "ok"])
    failover = Failover([_link(hosted, retries=2, min_attempt_s=5.0), _offline()])
    answer = await failover.generate(failover.links, MESSAGES, GenerationContext(), PARAMS)
    assert answer.provider.name == "openai" and len(hosted.attempts) == 3
