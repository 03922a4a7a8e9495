"""The dialogue service: conversation state, knowledge-grounded answers, handoff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from services.dialogue.fallback import ShortCircuit, short_circuit_client
from services.dialogue.flows import ConfigLibrary
from services.dialogue.kb import Embedder, KnowledgeLibrary
from services.dialogue.knowledge import KnowledgeBase
from services.dialogue.routes import router
from services.dialogue.service import DialogueService
from services.dialogue.state import StateStore
from services.dialogue.tools import ToolRunner
from supportbot.app import build_app
from supportbot.cache import open_redis, shared_cache
from supportbot.crypto import TranscriptCipher
from supportbot.db import open_database, ping, session_factory
from supportbot.resources import DEFAULT_KNOWLEDGE_DIR
from supportbot.settings import DialogueSettings
from supportbot.tenancy import TenantDirectory
from supportbot.telemetry import instrument_client


def create_app(settings: DialogueSettings | None = None,
               transports: dict[str, httpx.AsyncBaseTransport] | None = None) -> FastAPI:
    """The dialogue app; `transports` replaces the network to nlp or llm (tests plug in here)."""
    settings = settings or DialogueSettings()
    transports = transports or {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = open_database(settings.resolved_database_url)
        # An analysis past NLP_TIMEOUT_S is given up (the turn is answered without it); embedding a knowledge
        # base takes longer, so it has its own client. Both skip nlp for a few seconds once it has failed.
        nlp_circuit = ShortCircuit("nlp")
        nlp = short_circuit_client("nlp", settings.nlp_url, settings, circuit=nlp_circuit,
                                   transport=transports.get("nlp"), read_timeout_s=settings.nlp_timeout_s)
        embed_client = short_circuit_client("nlp", settings.nlp_url, settings, circuit=nlp_circuit,
                                            transport=transports.get("nlp"))
        llm = short_circuit_client("llm", settings.llm_url, settings, circuit=ShortCircuit("llm"),
                                   transport=transports.get("llm"), read_timeout_s=settings.llm_timeout_s)
        sessions = session_factory(engine)
        default_knowledge = KnowledgeBase.from_directory(settings.knowledge_dir or DEFAULT_KNOWLEDGE_DIR)
        redis = await open_redis(settings.redis_url)  # used from the moment it answers, even if later
        cache = shared_cache(redis)
        state = StateStore(cache, ttl_s=settings.state_ttl_s, redis=redis, key_prefix=settings.redis_key_prefix)
        tool_client = httpx.AsyncClient(transport=transports.get("tools"), follow_redirects=False)
        instrument_client(tool_client)
        app.state.dialogue = DialogueService(
            sessions=sessions, nlp=nlp, llm=llm,
            knowledge=KnowledgeLibrary(sessions, default_knowledge, Embedder(embed_client)),
            configs=ConfigLibrary(settings.data_dir), state=state,
            tools=ToolRunner(tool_client), settings=settings, tenants=TenantDirectory(sessions),
            cipher=TranscriptCipher.from_setting(settings.transcript_keys.get_secret_value()
                                                 if settings.transcript_keys else None))
        app.state.readiness_checks = {"database": lambda: ping(engine)}
        # Without nlp or llm turns are still answered, marked degraded.
        app.state.optional_checks = {"nlp": nlp.readiness, "llm": llm.readiness}
        if redis is not None:  # while it is down, state and locks are per process: degraded
            app.state.optional_checks["redis"] = redis.check
        try:
            yield
        finally:
            await tool_client.aclose()
            await cache.aclose()
            if redis is not None:
                await redis.aclose()
            await nlp.aclose()
            await embed_client.aclose()
            await llm.aclose()
            await engine.dispose()

    return build_app("dialogue", settings, lifespan=lifespan, routers=[router], title="supportbot dialogue")
