"""The llm service over HTTP (ASGI), against a real OpenAI-compatible server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.llm.app import create_app
from supportbot.settings import LlmSettings
from tests.fake_openai import FakeOpenAI
from tests.helpers import SERVICE_HEADERS, add_tenants
from tests.llm.support import usage_rows
from tests.stack import running

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def llm_client(database_url: str, data_dir: Path, *, fake: FakeOpenAI | None = None,
                     redis_url: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    settings = LlmSettings(database_url=database_url, data_dir=data_dir, redis_url=redis_url,
                           openai_api_key="sk-test-key" if fake else None,
                           openai_base_url=fake.base_url if fake else None, openai_model="gpt-4o-mini",
                           openai_timeout_s=1.5, openai_max_retries=0)
    app = create_app(settings)
    async with running(app):
        await add_tenants(database_url, "demo", "acme")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://llm",
                                     headers=SERVICE_HEADERS) as client:
            yield client


def request(text: str = "How long does shipping take?", **extra: Any) -> dict[str, Any]:
    return {"tenant_id": "demo", "conversation_id": "conv_12345678",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
            "temperature": 0.0, **extra}


KNOWLEDGE = {"intent": "shipping_options", "language": "en", "knowledge": [
    {"title": "Shipping — Delivery times", "path": "shipping.md",
     "snippet": "Standard shipping takes 3–5 business days."}]}


async def test_offline_responder_answers_from_the_knowledge_it_is_given(database_url: str, data_dir: Path) -> None:
    async with llm_client(database_url, data_dir) as client:
        grounded = await client.post("/v1/generate", json=request(context=KNOWLEDGE))
        nothing = await client.post("/v1/generate", json=request("What is the meaning of life?"))
    assert grounded.status_code == 200
    body = grounded.json()
    assert body["provider"] == "offline" and body["cached"] is False
    assert "offline" in body["text"].lower()
    assert "3–5 business days" in body["text"]
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert nothing.json()["text"].strip() and "offline" in nothing.json()["text"].lower()
    assert "3–5" not in nothing.json()["text"]
    rows = await usage_rows(database_url)
    assert [(r.provider, r.outcome) for r in rows] == [("offline", "ok"), ("offline", "ok")]


async def test_hosted_answer_and_usage_match_the_server(database_url: str, data_dir: Path,
                                                        fake_openai: FakeOpenAI) -> None:
    async with llm_client(database_url, data_dir, fake=fake_openai) as client:
        response = await client.post("/v1/generate", json=request(max_tokens=64))
    body = response.json()
    assert response.status_code == 200
    assert body["provider"] == "openai"
    assert body["text"] == fake_openai.reply
    assert body["usage"] == {"prompt_tokens": 57, "completion_tokens": 11}
    sent = fake_openai.requests[0]
    assert sent["model"] == "gpt-4o-mini" and sent["max_tokens"] == 64
    assert sent["messages"][-1] == {"role": "user", "content": "How long does shipping take?"}
    [row] = await usage_rows(database_url)
    assert (row.tenant_id, row.conversation_id, row.provider) == ("demo", "conv_12345678", "openai")
    assert (row.prompt_tokens, row.completion_tokens, row.cached, row.estimated) == (57, 11, False, False)
    # gpt-4o-mini: $0.15 / $0.60 per million tokens
    assert float(row.cost_usd) == pytest.approx((57 * 0.15 + 11 * 0.60) / 1e6)


@pytest.mark.parametrize(("fault", "reason"), [("500", "http_500"), ("429", "http_429"),
                                                ("garbage", "invalid_response"), ("timeout", "timeout")])
async def test_provider_failure_fails_over_to_offline(fault: str, reason: str | None, sqlite_url: str,
                                                      data_dir: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.fault = fault
    async with llm_client(sqlite_url, data_dir, fake=fake_openai) as client:
        response = await client.post("/v1/generate", json=request(context=KNOWLEDGE))
    body = response.json()
    assert response.status_code == 200
    assert body["provider"] == "offline"
    assert body["failover_reason"].startswith("openai: ")
    if reason:
        assert reason in body["failover_reason"]
    assert "3–5 business days" in body["text"]
    [row] = await usage_rows(sqlite_url)
    assert row.outcome == "failover"


async def test_identical_requests_hit_the_redis_cache(sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI,
                                                     redis_url: str) -> None:
    async with llm_client(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url) as client:
        first = await client.post("/v1/generate", json=request())
        # Same conversation, whitespace differs: still the same key.
        second = await client.post("/v1/generate", json=request("How long does   shipping take?"))
        other_tenant = await client.post("/v1/generate", json={**request(), "tenant_id": "acme"})
        creative = await client.post("/v1/generate", json=request(temperature=0.7))
        opted_out = await client.post("/v1/generate", json=request(cache=False))
    assert first.headers["X-Cache"] == "miss" and second.headers["X-Cache"] == "hit"
    assert first.headers["X-Cache-Key"] == second.headers["X-Cache-Key"]
    assert ":demo:" in first.headers["X-Cache-Key"]
    assert second.json()["cached"] is True and second.json()["text"] == first.json()["text"]
    assert second.json()["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert other_tenant.headers["X-Cache"] == "miss", "tenants never share cache entries"
    assert creative.headers["X-Cache"] == "bypass" and opted_out.headers["X-Cache"] == "bypass"
    assert fake_openai.calls == 4  # first, other tenant, creative, opted out — the hit cost nothing upstream
    rows = await usage_rows(sqlite_url)
    assert [r.cached for r in rows] == [False, True, False, False, False]


async def test_offline_answers_are_never_cached(sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI,
                                               redis_url: str) -> None:
    async with llm_client(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url) as client:
        fake_openai.fault = "500"
        during_outage = await client.post("/v1/generate", json=request())
        fake_openai.fault = None
        after = await client.post("/v1/generate", json=request())
    assert during_outage.json()["provider"] == "offline"
    assert after.json()["provider"] == "openai" and after.headers["X-Cache"] == "miss"


@pytest.mark.parametrize(("payload", "field"), [
    ({"tenant_id": "demo", "messages": []}, "messages"),
    ({"tenant_id": "demo", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ({"tenant_id": "demo", "messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature"),
    ({"tenant_id": "Not A Slug", "messages": [{"role": "user", "content": "x"}]}, "tenant_id"),
    ({"messages": [{"role": "user", "content": "x"}]}, "tenant_id"),
])
async def test_bad_requests_name_the_field(payload: dict[str, Any], field: str, sqlite_url: str,
                                           data_dir: Path) -> None:
    async with llm_client(sqlite_url, data_dir) as client:
        response = await client.post("/v1/generate", json=payload)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field
