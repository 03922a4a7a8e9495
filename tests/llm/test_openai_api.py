"""The OpenAI-compatible API, through the official `openai` client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.fake_openai import FakeOpenAI
from tests.helpers import SERVICE_HEADERS
from tests.llm.support import llm_app, settings, usage_rows

pytestmark = pytest.mark.anyio
QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How long does shipping take?"}]


@asynccontextmanager
async def openai_client(config: object, tenant: str | None = "demo") -> AsyncIterator[AsyncOpenAI]:
    async with llm_app(config) as (app, _):  # type: ignore[arg-type]
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), headers=SERVICE_HEADERS)
        headers = {"X-Supportbot-Tenant": tenant} if tenant else {}
        client = AsyncOpenAI(base_url="http://llm/v1", api_key="unused", http_client=http, max_retries=0,
                             default_headers=headers)
        try:
            yield client
        finally:
            await client.close()


async def test_chat_completion_through_the_official_client(database_url: str, data_dir: Path,
                                                           fake_openai: FakeOpenAI, redis_url: str) -> None:
    config = settings(database_url, data_dir, fake=fake_openai, redis_url=redis_url)
    async with openai_client(config) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION,  # type: ignore[arg-type]
                                                          temperature=0, max_tokens=64)
        raw = await client.chat.completions.with_raw_response.create(model="supportbot", messages=QUESTION,  # type: ignore[arg-type]
                                                                     temperature=0, max_tokens=64)
        models = await client.models.list()
    assert completion.choices[0].message.content == fake_openai.reply
    assert completion.choices[0].finish_reason == "stop" and completion.object == "chat.completion"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (57, 11)  # type: ignore[union-attr]
    assert completion.model == "gpt-4o-mini"
    assert raw.headers["x-cache"] == "hit" and raw.parse().choices[0].message.content == fake_openai.reply
    assert [m.id for m in models.data] == ["gpt-4o-mini", "offline-responder"]
    assert fake_openai.calls == 1 and fake_openai.requests[0]["max_tokens"] == 64
    rows = await usage_rows(database_url)
    assert [(r.tenant_id, r.cached) for r in rows] == [("demo", False), ("demo", True)]


async def test_streaming_with_usage_through_the_official_client(sqlite_url: str, data_dir: Path,
                                                                fake_openai: FakeOpenAI) -> None:
    async with openai_client(settings(sqlite_url, data_dir, fake=fake_openai)) as client:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, stream=True,  # type: ignore[arg-type]
                                                      stream_options={"include_usage": True}, temperature=0)
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == fake_openai.reply
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (57, 11)
    assert fake_openai.requests[0]["stream"] is True
    assert fake_openai.requests[0]["stream_options"] == {"include_usage": True}


async def test_tenant_from_user_field_and_errors_in_openai_shape(sqlite_url: str, data_dir: Path,
                                                                 fake_openai: FakeOpenAI) -> None:
    async with openai_client(settings(sqlite_url, data_dir, fake=fake_openai), tenant=None) as client:
        by_user = await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, user="acme")  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError) as no_tenant:
            await client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION)  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError) as unknown_model:
            await client.chat.completions.create(model="gpt-9", messages=QUESTION, user="acme")  # type: ignore[arg-type]
        offline = await client.chat.completions.create(model="offline", messages=QUESTION, user="acme")  # type: ignore[arg-type]
    assert by_user.choices[0].message.content == fake_openai.reply
    assert "X-Supportbot-Tenant" in no_tenant.value.message
    assert unknown_model.value.body["type"] == "not_found"  # type: ignore[index]
    assert offline.model == "offline-responder" and fake_openai.calls == 1
    rows = await usage_rows(sqlite_url)
    assert [r.tenant_id for r in rows] == ["acme", "acme"]
