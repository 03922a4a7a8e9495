"""The nlp service: intent, out-of-scope, entities, sentiment and language."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from services.nlp.analyzer import Analyzer
from services.nlp.routes import router
from supportbot.app import build_app
from supportbot.settings import NlpSettings


def create_app(settings: NlpSettings | None = None) -> FastAPI:
    settings = settings or NlpSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.analyzer = await run_in_threadpool(Analyzer.from_settings, settings)
        yield

    return build_app("nlp", settings, lifespan=lifespan, routers=[router], title="supportbot nlp")
