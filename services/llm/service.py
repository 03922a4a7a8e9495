"""Generation: response cache with single flight, budgets, failover and usage accounting. No FastAPI here.

One request, in order: look the answer up in the cache (a hit costs nothing and is replayed); else join the
single flight for its key; reserve the tenant's budget; run the provider chain (`services.llm.failover`);
store a complete answer of the chain's first provider in the cache; queue one usage event; settle the budget.
Both `/v1/generate` and the OpenAI-compatible API come through here.

Within the caller's deadline (`supportbot.deadline`, from its `X-Supportbot-Deadline-Ms`) the wait for an
identical request's answer and the provider chain both end in time for the offline responder to answer. An
answer finished after its caller left (it disconnected, or the deadline is past by more than any caller
waits: `supportbot.deadline.caller_gone`) reached nobody: its usage event says `caller_gone`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

from services.llm.accounting import UsageRecord, UsageRecorder
from services.llm.admin import ConversationErasure
from services.llm.budgets import BudgetGuard, Reservation
from services.llm.failover import OFFLINE_ATTEMPT_S, Failover, Link
from services.llm.providers.base import GenerationOptions, Provider, SamplingParams
from services.llm.providers.offline import split_for_streaming
from services.llm.response_cache import CachedAnswer, Lease, ResponseCache, cache_key
from services.llm.tokens import count_messages, count_text
from supportbot import deadline as request_deadline
from supportbot.contracts.llm import ChatMessage, GenerateRequest, GenerateResponse, GenerationContext, Usage
from supportbot.db import utcnow
from supportbot.errors import NotFound
from supportbot.tenancy import TenantDirectory

log = logging.getLogger(__name__)

RESPOND_S = 0.2
RESPOND_SHARE = 0.1
"""Kept back from the caller's deadline for accounting and sending the answer: RESPOND_SHARE of the time the
caller gave, at least RESPOND_S (a busy event loop runs timers late, the caller's as well as ours)."""


@dataclass(frozen=True)
class LlmRequest:
    """One generation, whichever API it came in through."""

    tenant_id: str
    messages: list[ChatMessage]
    params: SamplingParams
    conversation_id: str | None = None
    context: GenerationContext = field(default_factory=GenerationContext)
    cache: bool = True
    model: str | None = None
    """Start the chain at the provider with this name or model; None: the whole chain."""

    @classmethod
    def from_generate(cls, body: GenerateRequest, *, default_max_tokens: int) -> LlmRequest:
        params = SamplingParams(
            temperature=body.temperature, max_tokens=body.max_tokens or default_max_tokens,
            options=GenerationOptions(top_p=body.top_p, stop=tuple(body.stop) if body.stop else None,
                                      seed=body.seed, presence_penalty=body.presence_penalty,
                                      frequency_penalty=body.frequency_penalty,
                                      tools=tuple(body.tools) if body.tools else None))
        return cls(tenant_id=body.tenant_id, conversation_id=body.conversation_id, messages=body.messages,
                   context=body.context, params=params, cache=body.cache)


@dataclass
class Outcome:
    response: GenerateResponse
    cache_status: str  # hit, miss or bypass
    cache_key: str | None
    request_id: str
    budget_warning: str | None = None
    finish_reason: str = "stop"


@dataclass
class _Begun:
    """Where a request stands after the cache lookup."""

    started: float
    request_id: str
    chain: list[Link]
    deadline: float | None = None
    """The caller's, on the `time.monotonic()` clock."""
    given_s: float = 0.0
    """How long the caller gave from the start."""

    @property
    def answer_by(self) -> float | None:
        """When the chain must have answered for the answer to reach the caller in time."""
        return None if self.deadline is None else self.deadline - max(RESPOND_S, RESPOND_SHARE * self.given_s)
    key: str | None = None
    status: str = "bypass"
    lease: Lease | None = None
    hit: CachedAnswer | None = None
    hit_response: GenerateResponse | None = None


@dataclass
class StreamOutcome:
    """A started stream: headers can be sent now; `pieces` yields the text; `response` is set at its end."""

    cache_status: str
    cache_key: str | None
    request_id: str
    provider: str
    model: str
    failover_reason: str | None
    pieces: AsyncIterator[str]
    budget_warning: str | None = None
    response: GenerateResponse | None = None
    finish_reason: str = "stop"


def cost_usd(prices: dict[str, tuple[float, float]], model: str, prompt: int, completion: int) -> Decimal:
    """Cost from the per-million price table (longest matching model prefix); unknown models cost 0."""
    price = prices.get(model)
    if price is None:
        matches = [name for name in prices if model.startswith(name)]
        price = prices[max(matches, key=len)] if matches else None
    if price is None:
        return Decimal(0)
    return (Decimal(str(price[0])) * prompt + Decimal(str(price[1])) * completion) / Decimal(1_000_000)


class Generator:
    """Answers every request; the last provider of the chain (the offline responder) always answers."""

    def __init__(self, failover: Failover, cache: ResponseCache, recorder: UsageRecorder, budgets: BudgetGuard,
                 *, prices: dict[str, tuple[float, float]], default_max_tokens: int,
                 nondeterministic_tenants: frozenset[str] = frozenset(),
                 erasure: ConversationErasure | None = None, tenants: TenantDirectory) -> None:
        """`tenants`: a request's tenant must exist (404 before any cache, budget or provider is asked)."""
        self.failover = failover
        self.tenants = tenants
        self.cache = cache
        self.recorder = recorder
        self.budgets = budgets
        self.prices = prices
        self.default_max_tokens = default_max_tokens
        self.nondeterministic_tenants = nondeterministic_tenants
        self.erasure = erasure or ConversationErasure(redis=None, ttl_s=cache.ttl_s)
        """Which cache keys answered each conversation, so that erasing it deletes them."""

    @property
    def providers(self) -> list[Provider]:
        return [link.provider for link in self.failover.links]

    async def _begin(self, request: LlmRequest) -> _Begun:
        """Pick the chain and consult the cache: a hit (already accounted), or the lease for a miss."""
        await self.tenants.require(request.tenant_id)
        begun = _Begun(time.perf_counter(), uuid.uuid4().hex, self._chain(request), request_deadline.current(),
                       max(0.0, request_deadline.remaining_s() or 0.0))
        begun.key, begun.status = self._key(request, begun.chain)
        if begun.key and request.conversation_id:
            await self.erasure.remember(request.tenant_id, request.conversation_id, begun.key)
        if begun.key:
            joined = await self._lookup(begun.key, begun.answer_by)
            if isinstance(joined, CachedAnswer):
                begun.hit = joined
                begun.hit_response = self._hit_response(joined)
                self._record(request, begun.request_id, begun.hit_response, begun.started, estimated=False,
                             outcome="ok")
            else:
                begun.lease, begun.status = joined, ("miss" if joined is not None else "bypass")
        return begun

    async def generate(self, request: LlmRequest, *,
                       disconnected: Callable[[], Awaitable[bool]] | None = None) -> Outcome:
        """`disconnected`: whether the caller has hung up (its connection's state)."""
        begun = await self._begin(request)
        started, request_id, chain, key, status, lease = (begun.started, begun.request_id, begun.chain,
                                                          begun.key, begun.status, begun.lease)
        if begun.hit_response is not None:
            return Outcome(begun.hit_response, "hit", key, request_id)
        try:
            reservation = await self._reserve(request, chain)
            answer = await self.failover.generate(chain, request.messages, request.context, request.params,
                                                  deadline=begun.answer_by)
            generation, provider = answer.generation, answer.provider
            prompt, completion = generation.prompt_tokens, generation.completion_tokens
            if generation.estimated:
                prompt, completion = count_messages(request.messages), count_text(generation.text)
            response = GenerateResponse(text=generation.text, usage=Usage(prompt_tokens=prompt,
                                        completion_tokens=completion), provider=provider.name,
                                        model=generation.model, cached=False,
                                        failover_reason="; ".join(answer.reasons) or None,
                                        tool_calls=list(generation.tool_calls) if generation.tool_calls else None)
            if lease is not None and provider is chain[0].provider and not generation.tool_calls:
                await lease.finish(CachedAnswer(text=generation.text, model=generation.model,
                                                provider=provider.name))
        finally:
            if lease is not None:
                await lease.finish(None)
        gone = request_deadline.caller_gone() or (disconnected is not None and await disconnected())
        self._record(request, request_id, response, started, estimated=generation.estimated,
                     outcome="caller_gone" if gone else "failover" if answer.reasons else "ok")
        await self._settle(reservation, response)
        return Outcome(response, status, key, request_id, reservation.warning if reservation else None,
                       generation.finish_reason)

    async def stream(self, request: LlmRequest) -> StreamOutcome:
        """Start a stream: headers are known once this returns (provider chosen, first text received)."""
        begun = await self._begin(request)
        started, request_id, chain, key, status, lease = (begun.started, begun.request_id, begun.chain,
                                                          begun.key, begun.status, begun.lease)
        if begun.hit is not None:
            return StreamOutcome("hit", key, request_id, begun.hit.provider, begun.hit.model, None,
                                 _replay(begun.hit), response=begun.hit_response)
        try:
            reservation = await self._reserve(request, chain)
            stream = await self.failover.stream(chain, request.messages, request.context, request.params,
                                                deadline=begun.answer_by)
        except BaseException:
            if lease is not None:
                await lease.finish(None)
            raise
        outcome = StreamOutcome(status, key, request_id, stream.provider.name,
                                stream.first.model or stream.provider.model, "; ".join(stream.reasons) or None,
                                pieces=_empty(), budget_warning=reservation.warning if reservation else None)

        async def relay() -> AsyncIterator[str]:
            pieces: list[str] = []
            usage = None
            disconnected = True
            try:
                async for delta in stream.deltas():
                    usage = delta.usage or usage
                    outcome.model = delta.model or outcome.model
                    outcome.finish_reason = delta.finish_reason or outcome.finish_reason
                    if delta.text:
                        pieces.append(delta.text)
                        yield delta.text
                disconnected = False
            finally:
                text = "".join(pieces)
                complete = not disconnected and stream.cut_reason is None
                estimated = usage is None or not complete
                prompt = usage.prompt_tokens if usage and not estimated else count_messages(request.messages)
                completion = usage.completion_tokens if usage and not estimated else count_text(text)
                if usage and not complete:  # a provider that reported usage then broke: keep what it said
                    prompt, completion = usage.prompt_tokens, max(usage.completion_tokens, count_text(text))
                outcome.response = GenerateResponse(
                    text=text, usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
                    provider=outcome.provider, model=outcome.model, cached=False,
                    failover_reason=outcome.failover_reason)
                label = ("client_disconnected" if disconnected else "stream_cut" if stream.cut_reason
                         else "failover" if stream.reasons else "ok")
                if not complete:  # OpenAI has no "cut" reason; "length" tells clients the text is truncated
                    outcome.finish_reason = "length"
                self._record(request, request_id, outcome.response, started, estimated=estimated, outcome=label)
                await asyncio.shield(self._finish_stream(lease, reservation, outcome.response, pieces,
                                                         cacheable=complete and stream.provider is chain[0].provider))

        outcome.pieces = relay()
        return outcome

    async def _finish_stream(self, lease: Lease | None, reservation: Reservation | None,
                             response: GenerateResponse, pieces: list[str], *, cacheable: bool) -> None:
        if lease is not None:
            answer = CachedAnswer(text=response.text, model=response.model, provider=response.provider,
                                  chunks=pieces)
            await lease.finish(answer if cacheable else None)
        await self._settle(reservation, response)

    def _chain(self, request: LlmRequest) -> list[Link]:
        try:
            return self.failover.chain(request.model)
        except LookupError:
            raise NotFound(f"model {request.model!r} is not served here; see GET /v1/models",
                           field="model") from None

    def _key(self, request: LlmRequest, chain: list[Link]) -> tuple[str | None, str]:
        primary = chain[0].provider
        deterministic = request.params.temperature == 0.0 or request.tenant_id in self.nondeterministic_tenants
        if not (request.cache and deterministic and primary.cacheable):
            return None, "bypass"
        return cache_key(tenant_id=request.tenant_id, model=primary.model, messages=request.messages,
                         params=request.params, context=request.context), "miss"

    async def _lookup(self, key: str, deadline: float | None) -> CachedAnswer | Lease | None:
        """A cached answer, a lease to fill the key, or None when the cache is down (bypass). An identical
        request's answer is awaited only while the offline responder could still answer after it."""
        if (hit := await self.cache.get(key)) is not None:
            return hit
        if not self.cache.available:
            return None
        wait_s = None if deadline is None else deadline - time.monotonic() - OFFLINE_ATTEMPT_S
        return await self.cache.join(key, wait_s=wait_s)

    async def _reserve(self, request: LlmRequest, chain: list[Link]) -> Reservation | None:
        budget = await self.budgets.budget(request.tenant_id)
        if budget is None:
            return None
        prompt = count_messages(request.messages)
        model = chain[0].provider.model
        return await self.budgets.reserve(
            request.tenant_id, tokens=prompt + request.params.max_tokens,
            cost_usd=cost_usd(self.prices, model, prompt, request.params.max_tokens))

    async def _settle(self, reservation: Reservation | None, response: GenerateResponse) -> None:
        if reservation is None:
            return
        usage = response.usage
        await self.budgets.settle(reservation, tokens=usage.prompt_tokens + usage.completion_tokens,
                                  cost_usd=cost_usd(self.prices, response.model, usage.prompt_tokens,
                                                    usage.completion_tokens))

    @staticmethod
    def _hit_response(hit: CachedAnswer) -> GenerateResponse:
        return GenerateResponse(text=hit.text, usage=Usage(prompt_tokens=0, completion_tokens=0),
                                provider=hit.provider, model=hit.model, cached=True)

    def _record(self, request: LlmRequest, request_id: str, response: GenerateResponse, started: float, *,
                estimated: bool, outcome: str) -> None:
        usage = response.usage
        self.recorder.record(UsageRecord(
            tenant_id=request.tenant_id, conversation_id=request.conversation_id, request_id=request_id,
            provider=response.provider, model=response.model, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=cost_usd(self.prices, response.model, usage.prompt_tokens, usage.completion_tokens),
            cached=response.cached, estimated=estimated, latency_ms=(time.perf_counter() - started) * 1000,
            outcome=outcome, created_at=utcnow()))


async def _replay(hit: CachedAnswer) -> AsyncIterator[str]:
    """A cached answer as a stream: the chunks it was streamed in, or a few words at a time."""
    for piece in hit.chunks or split_for_streaming(hit.text):
        yield piece
        await asyncio.sleep(0)


async def _empty() -> AsyncIterator[str]:
    return
    yield
