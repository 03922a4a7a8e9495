"""The public gateway: API-key auth in front of the dialogue service."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.types import Scope

from gateway.admin_routes import router as admin_router
from gateway.limits import Limits, LimitSettings
from gateway.request_limits import RequestLimitsMiddleware
from gateway.routes import router
from gateway.cors import CorsMiddleware
from gateway.tenants import Authenticator, WidgetOrigins, bootstrap_demo_tenant
from supportbot.app import build_app
from supportbot.cache import open_redis
from supportbot.db import open_database, ping, session_factory
from supportbot.http import service_client
from supportbot.deadline import CALLER_GRACE_S, DeadlineFor
from supportbot.settings import GatewaySettings

DIALOGUE_GRACE_S = CALLER_GRACE_S
"""How long past a turn's deadline the gateway still waits for dialogue's answer (due at the deadline)."""
_TURN_PATH = re.compile(r"/v1/conversations/[^/]+/messages/?")


def turn_deadline(seconds: float) -> DeadlineFor:
    """The gateway's own deadline rule: `seconds` for each turn from its arrival; a client's header is ignored."""
    def deadline_for(scope: Scope) -> float | None:
        return seconds if scope["method"] == "POST" and _TURN_PATH.fullmatch(scope["path"]) else None

    return deadline_for


def create_app(settings: GatewaySettings | None = None,
               transports: dict[str, httpx.AsyncBaseTransport] | None = None) -> FastAPI:
    """The gateway app; `transports` replaces the network to a downstream (tests plug in here)."""
    settings = settings or GatewaySettings()
    transports = transports or {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = open_database(settings.resolved_database_url)
        app.state.sessions = session_factory(engine)
        app.state.authenticator = Authenticator(app.state.sessions, fresh_s=settings.auth_cache_fresh_s,
                                                max_stale_s=settings.auth_cache_stale_s)
        app.state.widget_origins = WidgetOrigins(app.state.sessions)
        if settings.bootstrap_api_key is not None:
            await bootstrap_demo_tenant(app.state.sessions, api_key=settings.bootstrap_api_key.get_secret_value())
        dialogue = service_client("dialogue", settings.dialogue_url, settings, transports.get("dialogue"),
                                  deadline_margin_s=-DIALOGUE_GRACE_S)
        app.state.dialogue = dialogue
        # Not a readiness check: turns need no llm here, only usage and erasing (which answer 503 without it).
        app.state.llm = service_client("llm", settings.llm_url, settings, transports.get("llm"))
        app.state.readiness_checks = {"database": lambda: ping(engine), "dialogue": dialogue.readiness}
        redis = await open_redis(settings.redis_url)
        app.state.redis = redis
        app.state.limits = Limits(LimitSettings.from_settings(settings), redis=redis,
                                  key_prefix=settings.redis_key_prefix)
        if redis is not None:  # while it is down, rate limits are per replica: degraded
            app.state.optional_checks["redis"] = redis.check
        try:
            yield
        finally:
            await app.state.limits.aclose()
            if redis is not None:
                await redis.aclose()
            await dialogue.aclose()
            await app.state.llm.aclose()
            await app.state.authenticator.aclose()
            await engine.dispose()

    app = build_app("gateway", settings, lifespan=lifespan, routers=[router, admin_router],
                    title="supportbot gateway", internal=False,
                    deadline_for=turn_deadline(settings.turn_deadline_s))  # API keys, not the service token
    app.add_middleware(RequestLimitsMiddleware, max_body_bytes=settings.max_request_bytes,
                       max_headers=settings.max_headers, max_header_bytes=settings.max_header_bytes)
    app.add_middleware(CorsMiddleware)  # outermost: preflights are answered before anything else looks
    return app
