"""The llm service: hosted generation with failover to the offline responder, cached and accounted."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.llm.providers.base import Provider
from services.llm.providers.offline import OfflineResponder
from services.llm.providers.openai_provider import OpenAIProvider
from services.llm.response_cache import ResponseCache
from services.llm.routes import router
from services.llm.service import Generator
from supportbot.app import build_app
from supportbot.cache import open_cache
from supportbot.db import make_async_engine, ping, session_factory, upgrade_database
from supportbot.settings import LlmSettings

log = logging.getLogger(__name__)


def build_providers(settings: LlmSettings) -> list[Provider]:
    """The failover chain: OpenAI when a key is set, then the offline responder."""
    providers: list[Provider] = []
    if settings.openai_api_key is not None:
        providers.append(OpenAIProvider(
            api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url,
            model=settings.openai_model, timeout_s=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
        ))
    else:
        log.warning("OPENAI_API_KEY is not set: answering with the offline responder only")
    providers.append(OfflineResponder())
    return providers


def create_app(settings: LlmSettings | None = None) -> FastAPI:
    settings = settings or LlmSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.resolved_database_url
        upgrade_database(url)
        engine = make_async_engine(url)
        cache = await open_cache(settings.redis_url)
        providers = build_providers(settings)
        app.state.generator = Generator(providers, ResponseCache(cache, settings.cache_ttl_s),
                                        session_factory(engine), default_max_tokens=settings.default_max_tokens,
                                        prices=settings.prices_per_million)
        app.state.readiness_checks = {"database": lambda: ping(engine)}  # a down cache is bypassed, not fatal
        try:
            yield
        finally:
            for provider in providers:
                await provider.aclose()
            await cache.aclose()
            await engine.dispose()

    return build_app("llm", settings, lifespan=lifespan, routers=[router], title="supportbot llm")
