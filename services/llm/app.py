"""The llm service: providers with failover, response cache, budgets and usage accounting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.llm.accounting import UsageRecorder
from services.llm.admin import ConversationErasure
from services.llm.breaker import CircuitBreaker
from services.llm.budgets import BudgetGuard
from services.llm.failover import OFFLINE_ATTEMPT_S, Failover, Link, RetryPolicy
from services.llm.providers.base import Provider
from services.llm.providers.offline import OfflineResponder
from services.llm.providers.openai_provider import OpenAIProvider
from services.llm.response_cache import ResponseCache
from services.llm.routes import router
from services.llm.service import Generator
from services.llm.tokens import encoding
from supportbot.app import build_app
from supportbot.cache import SharedRedis, open_redis, shared_cache
from supportbot.db import open_database, ping, session_factory
from supportbot.settings import LlmSettings
from supportbot.tenancy import TenantDirectory

log = logging.getLogger(__name__)


def build_chain(settings: LlmSettings, redis: SharedRedis | None,
                extra: list[Provider] | None = None) -> list[Link]:
    """The failover chain: OpenAI when a key is set, the local server when configured, `extra` (e.g. an
    in-process model), then the offline responder. Each gets its own breaker and retry policy."""

    def link(provider: Provider, retries: int, min_attempt_s: float = settings.min_attempt_s) -> Link:
        breaker = CircuitBreaker(provider.name, redis=redis, failures=settings.breaker_failures,
                                 window_s=settings.breaker_window_s, open_s=settings.breaker_open_s,
                                 key_prefix=settings.redis_key_prefix)
        return Link(provider, breaker, RetryPolicy(retries, settings.retry_base_s, settings.retry_max_wait_s),
                    min_attempt_s)

    links: list[Link] = []
    if settings.openai_api_key is not None:
        links.append(link(OpenAIProvider(
            api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url,
            model=settings.openai_model, connect_timeout_s=settings.openai_connect_timeout_s,
            read_timeout_s=settings.openai_timeout_s, name="openai"), settings.openai_max_retries))
    if settings.local_llm_base_url:
        if not settings.local_llm_model:
            raise ValueError("LOCAL_LLM_BASE_URL is set: set LOCAL_LLM_MODEL to the model it serves")
        links.append(link(OpenAIProvider(
            api_key=settings.local_llm_api_key.get_secret_value(), base_url=settings.local_llm_base_url,
            model=settings.local_llm_model, connect_timeout_s=settings.local_llm_connect_timeout_s,
            read_timeout_s=settings.local_llm_timeout_s, name="local"), settings.local_llm_max_retries))
    links.extend(link(provider, 0) for provider in extra or [])
    if len(links) == 0:
        log.warning("no LLM configured (OPENAI_API_KEY, LOCAL_LLM_BASE_URL): answering with the offline responder")
    links.append(link(OfflineResponder(), 0, OFFLINE_ATTEMPT_S))
    return links


async def load_local_models(settings: LlmSettings) -> list[Provider]:
    """The in-process model from LOCAL_LLM_MODEL_PATH, if set (loaded off the event loop)."""
    if settings.local_llm_model_path is None:
        return []
    from services.llm.providers.transformers_local import TransformersProvider

    provider = await asyncio.to_thread(
        TransformersProvider, settings.local_llm_model_path, device=settings.local_llm_device,
        max_batch_size=settings.local_llm_max_batch_size, max_wait_ms=settings.local_llm_max_wait_ms)
    return [provider]


def create_app(settings: LlmSettings | None = None) -> FastAPI:
    settings = settings or LlmSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = open_database(settings.resolved_database_url)
        sessions = session_factory(engine)
        redis = await open_redis(settings.redis_url)  # used from the moment it answers, even if later
        cache = shared_cache(redis)
        failover = Failover(build_chain(settings, redis, extra=await load_local_models(settings)))
        erasure = ConversationErasure(redis=redis, ttl_s=settings.cache_ttl_s, key_prefix=settings.redis_key_prefix)
        recorder = UsageRecorder(sessions, settings.spool_dir, batch_size=settings.usage_batch_size,
                                 flush_interval_s=settings.usage_flush_interval_s,
                                 spool_retry_s=settings.usage_spool_retry_s, scrub=erasure.scrub)
        await asyncio.to_thread(encoding)  # load the tokenizer now, not on the first request
        await recorder.start()
        app.state.generator = Generator(
            failover, ResponseCache(cache, settings.cache_ttl_s, redis=redis, key_prefix=settings.redis_key_prefix,
                                    lock_ttl_s=settings.cache_lock_ttl_s),
            recorder, BudgetGuard(sessions, redis, refresh_s=settings.budget_refresh_s,
                                  key_prefix=settings.redis_key_prefix),
            prices=settings.prices_per_million, default_max_tokens=settings.default_max_tokens,
            nondeterministic_tenants=settings.cache_nondeterministic_tenants, erasure=erasure,
            tenants=TenantDirectory(sessions))
        app.state.recorder = recorder
        app.state.sessions = sessions
        app.state.readiness_checks = {"database": lambda: ping(engine)}
        if redis is not None:  # while it is down, cache, budgets and breakers are per process: degraded
            app.state.optional_checks = {"redis": redis.check}
        try:
            yield
        finally:
            await recorder.stop()
            for link in failover.links:
                await link.provider.aclose()
            await cache.aclose()
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    return build_app("llm", settings, lifespan=lifespan, routers=[router], title="supportbot llm")
