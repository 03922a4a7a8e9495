"""The one place a service's FastAPI app is assembled: logging, tracing, errors, probes, request logs."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supportbot import __version__
from supportbot.deadline import DeadlineFor, DeadlineMiddleware
from supportbot.errors import install_error_handlers
from supportbot.health import health_router
from supportbot.logging import configure_logging
from supportbot.service_auth import ServiceTokenMiddleware, required_token
from supportbot.settings import CommonSettings
from supportbot.telemetry import configure_tracing, instrument_app

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
access_log = logging.getLogger("supportbot.access")


class AccessLogMiddleware:
    """One ECS log line per request: method, route path, status, duration. Plain ASGI, so streams pass."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ("/healthz", "/readyz"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            access_log.info(
                "%s %s %s", scope["method"], scope["path"], status,
                extra={"http.request.method": scope["method"], "url.path": scope["path"],
                       "http.response.status_code": status,
                       "event.duration": int((time.perf_counter() - started) * 1e9)},
            )


def build_app(
    service_name: str,
    settings: CommonSettings,
    *,
    lifespan: Lifespan,
    routers: list[APIRouter],
    title: str,
    deadline_for: DeadlineFor | None = None,
    internal: bool = True,
) -> FastAPI:
    """Create a service app; `lifespan` opens its clients once and sets the probes' checks (`supportbot.health`).

    Every request's deadline comes from `X-Supportbot-Deadline-Ms` (`supportbot.deadline`); a public door
    passes `deadline_for` to set it itself and ignore the header.

    An `internal` service answers only callers with the service token (`supportbot.service_auth`) and refuses
    to be built without one (`ServiceTokenMissing`); the gateway, the public door, is not internal."""
    token = required_token(service_name, settings) if internal else None
    configure_logging(service_name, settings.log_level)
    provider = configure_tracing(service_name, settings.otlp_endpoint)

    @asynccontextmanager
    async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app):
            # Everything built at start-up lives as long as the process: keep it out of the cyclic GC's
            # full collections, which otherwise pause every request while they walk it.
            gc.collect()
            gc.freeze()
            yield

    app = FastAPI(title=title, version=__version__, lifespan=_lifespan)
    app.state.service_name = service_name
    app.state.settings = settings
    app.state.readiness_checks = {}
    app.state.optional_checks = {}
    install_error_handlers(app)
    app.include_router(health_router())
    for router in routers:
        app.include_router(router)
    if token is not None:  # inside the access log, so refused calls are logged too
        app.add_middleware(ServiceTokenMiddleware, token=token, service=service_name)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(DeadlineMiddleware, deadline_for=deadline_for)
    instrument_app(app, provider)
    return app
