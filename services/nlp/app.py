"""The nlp service: intent, out-of-scope, entities, sentiment and language."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.nlp.analyzer import Analyzer
from services.nlp.routes import router
from services.nlp.startup import ModelStartup
from supportbot.app import build_app
from supportbot.settings import NlpSettings


def create_app(settings: NlpSettings | None = None) -> FastAPI:
    settings = settings or NlpSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The probes answer at once: the models load (or are prepared first) in the background, `/readyz`
        # reports how far, and the model routes answer 503 until `analyzer` is set.
        app.state.analyzer = None

        def ready(analyzer: Analyzer) -> None:
            app.state.analyzer = analyzer

        startup = ModelStartup(settings, on_ready=ready)
        app.state.preparation = startup
        startup.start()
        try:
            yield
        finally:
            await startup.close()  # ends a preparation under way: the service exits within 10 s of SIGTERM

    return build_app("nlp", settings, lifespan=lifespan, routers=[router], title="supportbot nlp")
