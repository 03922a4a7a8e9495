"""Helpers for the llm tests: an app with fast retries and breakers, usage rows, SSE parsing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from services.llm.app import create_app
from services.llm.service import Generator
from services.llm.storage import UsageEvent
from supportbot.db import make_async_engine, session_factory
from supportbot.settings import LlmSettings
from tests.fake_openai import FakeOpenAI
from tests.helpers import SERVICE_HEADERS, add_tenants
from tests.stack import running

TENANTS = ("demo", "acme")
"""The tenants `llm_app` adds: llm serves only tenants that exist."""


def settings(database_url: str, data_dir: Path, *, fake: FakeOpenAI | None = None, local: FakeOpenAI | None = None,
             redis_url: str | None = None, **overrides: Any) -> LlmSettings:
    values: dict[str, Any] = dict(
        database_url=database_url, data_dir=data_dir, redis_url=redis_url,
        openai_api_key="sk-test-key" if fake else None, openai_base_url=fake.base_url if fake else None,
        openai_model="gpt-4o-mini", openai_timeout_s=1.5, openai_max_retries=0,
        local_llm_base_url=local.base_url if local else None, local_llm_model="llama-local" if local else None,
        local_llm_timeout_s=1.5, local_llm_max_retries=0,
        retry_base_s=0.01, retry_max_wait_s=2.0, breaker_failures=100, breaker_open_s=0.5,
        usage_flush_interval_s=0.02, usage_spool_retry_s=0.2, budget_refresh_s=0.0,
    )
    values.update(overrides)
    return LlmSettings(**values)


@asynccontextmanager
async def llm_app(config: LlmSettings,
                  tenants: tuple[str, ...] = TENANTS) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The llm app and a client that calls it as dialogue does (with the service token); `tenants` exist."""
    app = create_app(config)
    async with running(app):
        await add_tenants(config.resolved_database_url, *tenants)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://llm",
                                     timeout=30, headers=SERVICE_HEADERS) as client:
            yield app, client


def generator(app: FastAPI) -> Generator:
    return app.state.generator  # type: ignore[no-any-return]


async def usage_rows(database_url: str) -> list[UsageEvent]:
    engine = make_async_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            return list(await session.scalars(select(UsageEvent).order_by(UsageEvent.id)))
    finally:
        await engine.dispose()


def ask(text: str = "How long does shipping take?", tenant: str = "demo", **extra: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "conversation_id": "conv_12345678",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
            "temperature": 0.0, **extra}


def sse_events(body: str) -> list[Any]:
    """The JSON payloads of an SSE body, `[DONE]` as the string."""
    events = []
    for line in body.splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events
