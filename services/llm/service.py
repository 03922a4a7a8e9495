"""Generation with failover, response caching and usage accounting. No FastAPI here."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.llm.providers.base import Generation, Provider, ProviderError
from services.llm.response_cache import CachedAnswer, ResponseCache, cache_key, is_cacheable
from services.llm.storage import UsageEvent, add_usage_event
from supportbot.contracts.llm import GenerateRequest, GenerateResponse, Usage
from supportbot.db import transaction, utcnow

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    response: GenerateResponse
    cache_status: str  # hit, miss or bypass
    cache_key: str | None


def cost_usd(prices: dict[str, tuple[float, float]], model: str, prompt: int, completion: int) -> Decimal:
    """Cost from the per-million price table; unknown models cost 0 and are logged once per call."""
    price = prices.get(model) or next((p for name, p in prices.items() if model.startswith(name)), None)
    if price is None:
        return Decimal(0)
    return (Decimal(str(price[0])) * prompt + Decimal(str(price[1])) * completion) / Decimal(1_000_000)


class Generator:
    """Tries each provider in order; the last one (the offline responder) always answers."""

    def __init__(self, providers: list[Provider], cache: ResponseCache,
                 sessions: async_sessionmaker[AsyncSession], *, default_max_tokens: int,
                 prices: dict[str, tuple[float, float]]) -> None:
        self.providers = providers
        self.cache = cache
        self.sessions = sessions
        self.default_max_tokens = default_max_tokens
        self.prices = prices

    async def generate(self, request: GenerateRequest) -> Outcome:
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        max_tokens = request.max_tokens or self.default_max_tokens
        primary = self.providers[0]
        key = (cache_key(request, model=primary.model, max_tokens=max_tokens)
               if primary.cacheable and is_cacheable(request) else None)
        if key and (hit := await self.cache.get(key)):
            response = GenerateResponse(text=hit.text, usage=Usage(prompt_tokens=0, completion_tokens=0),
                                        provider=hit.provider, model=hit.model, cached=True)
            await self._record(request, request_id, response, started, estimated=False)
            return Outcome(response, "hit", key)

        reasons: list[str] = []
        for provider in self.providers:
            try:
                generation = await provider.generate(request.messages, request.context,
                                                     temperature=request.temperature, max_tokens=max_tokens)
            except ProviderError as exc:
                reasons.append(f"{provider.name}: {exc.reason}")
                log.warning("provider failed, failing over", extra={"supportbot.provider": provider.name,
                                                                    "supportbot.reason": exc.reason})
                continue
            response = self._response(provider, generation, reasons)
            if key and provider is primary:
                await self.cache.put(key, CachedAnswer(text=generation.text, model=generation.model,
                                                       provider=provider.name))
            await self._record(request, request_id, response, started, estimated=generation.estimated)
            return Outcome(response, "miss" if key else "bypass", key)
        raise RuntimeError("no provider answered; the offline responder must be last")

    @staticmethod
    def _response(provider: Provider, generation: Generation, reasons: list[str]) -> GenerateResponse:
        return GenerateResponse(
            text=generation.text,
            usage=Usage(prompt_tokens=generation.prompt_tokens, completion_tokens=generation.completion_tokens),
            provider=provider.name, model=generation.model, cached=False,
            failover_reason="; ".join(reasons) or None,
        )

    async def _record(self, request: GenerateRequest, request_id: str, response: GenerateResponse,
                      started: float, *, estimated: bool) -> None:
        event = UsageEvent(
            tenant_id=request.tenant_id, conversation_id=request.conversation_id, request_id=request_id,
            provider=response.provider, model=response.model,
            prompt_tokens=response.usage.prompt_tokens, completion_tokens=response.usage.completion_tokens,
            cost_usd=cost_usd(self.prices, response.model, response.usage.prompt_tokens,
                              response.usage.completion_tokens),
            cached=response.cached, estimated=estimated, latency_ms=(time.perf_counter() - started) * 1000,
            outcome="failover" if response.failover_reason else "ok", created_at=utcnow(),
        )
        try:
            async with transaction(self.sessions) as session:
                await add_usage_event(session, event)
        except SQLAlchemyError as exc:
            log.error("could not record a usage event", extra={"supportbot.error": type(exc).__name__})
