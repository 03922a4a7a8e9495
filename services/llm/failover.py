"""The one place providers are tried in order: retries with backoff, circuit breakers, failover.

For each provider in the chain: skip it while its breaker is open; otherwise call it, retrying retryable
failures (429, 5xx, timeouts, broken or garbage answers) with full-jitter exponential backoff that honours
`Retry-After` — a provider asking for a longer wait than `retry_max_wait_s` is failed over at once. A stream
counts as started at its first piece of text: failures before it are retried and failed over transparently;
a failure after it ends the stream cleanly and is reported in `StartedStream.cut_reason`.

Within a deadline (the caller's, `supportbot.deadline`) every link keeps back, for the links after it, the
least time each of them needs (`Link.min_attempt_s`; the offline responder's is tiny), and spends only the
rest: an attempt is cut where that ends (reason `deadline`, a failure for its breaker, so a hanging provider
opens its breaker within a few requests), a retry is not started when what is left after its backoff cannot
hold an attempt, and a provider whose share is shorter than its `min_attempt_s` is not tried (`no_time`, not
the provider's fault). The last link, the offline responder, always runs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from services.llm.breaker import CircuitBreaker
from services.llm.providers.base import Delta, Generation, Provider, ProviderError, SamplingParams
from supportbot.contracts.llm import ChatMessage, GenerationContext

log = logging.getLogger(__name__)
T = TypeVar("T")

MIN_ATTEMPT_S = 1.0
"""The default `Link.min_attempt_s` of a provider behind a network (LLM_MIN_ATTEMPT_S)."""
OFFLINE_ATTEMPT_S = 0.05
"""What the offline responder needs: every link before it keeps this back."""
HANDOVER_S = 0.02
"""Kept back with each later link's share: the moments between one link giving up and the next starting."""

Budget = Callable[[], float | None]
"""Seconds a link may still spend (None: no deadline)."""


def _no_budget() -> float | None:
    return None


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int
    base_s: float
    max_wait_s: float

    def wait(self, state: RetryCallState) -> float:
        """Full jitter: uniform(0, base * 2^attempt), capped; never shorter than the provider's Retry-After."""
        backoff = random.uniform(0, min(self.max_wait_s, self.base_s * 2 ** (state.attempt_number - 1)))
        exc = state.outcome.exception() if state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, ProviderError) and exc.retry_after else 0.0
        return max(backoff, retry_after)

    def should_retry(self, exc: BaseException) -> bool:
        return (isinstance(exc, ProviderError) and exc.retryable
                and (exc.retry_after is None or exc.retry_after <= self.max_wait_s))

    async def call(self, attempt: Callable[[], Awaitable[T]], provider: str, *, budget: Budget = _no_budget,
                   min_attempt_s: float = 0.0) -> T:
        """Run `attempt` with retries; each attempt is cut when `budget()` runs out, and no retry is started
        that would begin with less than `min_attempt_s` of it left."""
        def out_of_time(state: RetryCallState) -> bool:
            left = budget()
            return left is not None and left - state.upcoming_sleep < min_attempt_s

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("retrying provider", extra={"supportbot.provider": provider,
                                                 "supportbot.reason": getattr(exc, "reason", None),
                                                 "supportbot.attempt": state.attempt_number})

        retrying = AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1) | out_of_time, wait=self.wait,
                                 retry=retry_if_exception(self.should_retry), before_sleep=before_sleep,
                                 reraise=True)
        async def once() -> T:
            left = budget()
            if left is None:
                return await attempt()
            if left < min_attempt_s:
                raise ProviderError("no_time", "the deadline leaves no time for an attempt", breaker=False)
            try:
                async with asyncio.timeout(left):
                    return await attempt()
            except TimeoutError:
                # The provider took all the time it could have: as unhealthy as a timeout, and it was one.
                raise ProviderError("deadline", "attempt cut at the deadline", retryable=True) from None

        return await retrying(once)


@dataclass
class Link:
    """A provider in the chain with its breaker and retry policy."""

    provider: Provider
    breaker: CircuitBreaker
    retry: RetryPolicy
    min_attempt_s: float = MIN_ATTEMPT_S
    """Within a deadline: the shortest attempt worth starting, and what the links before it leave for it."""


@dataclass
class Answer:
    provider: Provider
    generation: Generation
    reasons: list[str]


@dataclass
class StartedStream:
    """A stream that has produced its first text; iterate `deltas()` for the rest (first one included)."""

    provider: Provider
    reasons: list[str]
    link: Link
    first: Delta
    rest: AsyncIterator[Delta]
    cut_reason: str | None = None
    _done: bool = field(default=False, repr=False)

    async def deltas(self) -> AsyncIterator[Delta]:
        yield self.first
        try:
            async for delta in self.rest:
                yield delta
        except ProviderError as exc:
            self.cut_reason = exc.reason
            log.warning("stream cut after its first token", extra={"supportbot.provider": self.provider.name,
                                                                    "supportbot.reason": exc.reason})
            if exc.breaker:
                await self.link.breaker.failure()
            return
        finally:
            await _aclose(self.rest)
        await self.link.breaker.success()


class Failover:
    """Runs a request down a chain of providers; the last (the offline responder) must always answer."""

    def __init__(self, links: list[Link]) -> None:
        self.links = links

    def chain(self, model: str | None) -> list[Link]:
        """The chain starting at the provider whose name or model is `model` (the whole chain for None)."""
        if model is None:
            return self.links
        for index, link in enumerate(self.links):
            if model in (link.provider.name, link.provider.model):
                return self.links[index:]
        raise LookupError(model)

    async def generate(self, chain: list[Link], messages: list[ChatMessage], context: GenerationContext,
                       params: SamplingParams, *, deadline: float | None = None) -> Answer:
        """`deadline`: the caller's, on the `time.monotonic()` clock (None: each provider's own timeouts)."""
        async def attempt(provider: Provider) -> Generation:
            return await provider.generate(messages, context, temperature=params.temperature,
                                           max_tokens=params.max_tokens, options=params.options)

        link, generation, reasons = await self._first_to_answer(chain, attempt, deadline)
        await link.breaker.success()
        return Answer(link.provider, generation, reasons)

    async def stream(self, chain: list[Link], messages: list[ChatMessage], context: GenerationContext,
                     params: SamplingParams, *, deadline: float | None = None) -> StartedStream:
        """`deadline` bounds the wait for the first text (the rest streams at the provider's pace)."""
        async def attempt(provider: Provider) -> tuple[Delta, AsyncIterator[Delta]]:
            deltas = provider.stream(messages, context, temperature=params.temperature,
                                     max_tokens=params.max_tokens, options=params.options).__aiter__()
            try:
                async for delta in deltas:
                    if delta.text:
                        return delta, deltas
            except BaseException:
                await _aclose(deltas)
                raise
            raise ProviderError("empty_response", "stream ended before any text", retryable=True)

        # The breaker hears of success only when the stream has finished (StartedStream).
        link, (first, rest), reasons = await self._first_to_answer(chain, attempt, deadline)
        return StartedStream(link.provider, reasons, link, first, rest)

    async def _first_to_answer(self, chain: list[Link], attempt: Callable[[Provider], Awaitable[T]],
                               deadline: float | None = None) -> tuple[Link, T, list[str]]:
        """The first link whose breaker lets it try and whose (retried) attempt succeeds, and why others didn't."""
        reasons: list[str] = []
        for index, link in enumerate(chain):
            provider = link.provider
            budget = _no_budget
            if deadline is not None and index < len(chain) - 1:
                budget = _budget(deadline, reserve_s=sum(later.min_attempt_s + HANDOVER_S
                                                         for later in chain[index + 1:]))
                left = budget()
                if left is not None and left < link.min_attempt_s:  # before allow(): keep a half-open probe
                    reasons.append(f"{provider.name}: no_time")
                    continue
            if not await link.breaker.allow():
                reasons.append(f"{provider.name}: circuit_open")
                continue
            try:
                result = await link.retry.call(lambda provider=provider: attempt(provider), provider.name,
                                               budget=budget, min_attempt_s=link.min_attempt_s)
            except ProviderError as exc:
                await self._failed(link, exc, reasons)
                continue
            return link, result, reasons
        raise RuntimeError("no provider answered; the offline responder must be last")

    @staticmethod
    async def _failed(link: Link, exc: ProviderError, reasons: list[str]) -> None:
        reasons.append(f"{link.provider.name}: {exc.reason}")
        log.warning("provider failed, failing over", extra={"supportbot.provider": link.provider.name,
                                                            "supportbot.reason": exc.reason})
        if exc.breaker:
            await link.breaker.failure()


def _budget(deadline: float, *, reserve_s: float) -> Budget:
    """What a link may spend: the time to `deadline` less what the links after it need."""
    def left() -> float:
        return deadline - time.monotonic() - reserve_s

    return left


async def _aclose(iterator: AsyncIterator[Delta]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()
