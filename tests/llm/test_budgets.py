"""Per-tenant monthly budgets: hard refusals, soft warnings, no overspend under a concurrent burst."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from services.llm.accounting import UsageRecord
from services.llm.storage import insert_usage_events, set_budget
from services.llm.tokens import count_messages
from supportbot.cli import main as cli
from supportbot.contracts.llm import ChatMessage
from supportbot.db import make_async_engine, session_factory, transaction, upgrade_database
from tests.fake_openai import FakeOpenAI
from tests.helpers import create_tenants
from tests.llm.support import ask, llm_app, settings, usage_rows

pytestmark = pytest.mark.anyio
PROMPT = count_messages([ChatMessage(role="system", content="Be brief."),
                         ChatMessage(role="user", content="How long does shipping take?")])


async def budget(database_url: str, tenant: str = "demo", *, tokens: int | None = None, usd: str | None = None,
                 soft_pct: int = 80, used_tokens: int = 0) -> None:
    upgrade_database(database_url)
    engine = make_async_engine(database_url)
    try:
        async with transaction(session_factory(engine)) as session:
            await set_budget(session, tenant_id=tenant, monthly_tokens=tokens,
                             monthly_usd=Decimal(usd) if usd else None, soft_pct=soft_pct)
            if used_tokens:
                await insert_usage_events(session, [UsageRecord(
                    tenant_id=tenant, conversation_id=None, request_id="earlier", provider="openai",
                    model="gpt-4o-mini", prompt_tokens=used_tokens, completion_tokens=0, cost_usd=Decimal(0),
                    cached=False, estimated=False, latency_ms=1, outcome="ok", created_at=datetime.now(UTC)).__dict__])
    finally:
        await engine.dispose()


@pytest.mark.parametrize("shared_redis", [True, False])
async def test_a_concurrent_burst_cannot_overspend(shared_redis: bool, sqlite_url: str, data_dir: Path,
                                                   fake_openai: FakeOpenAI, request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("redis_url") if shared_redis else None
    limit = 5 * (PROMPT + 50) + 10  # room for exactly five worst-case reservations at a time
    await budget(sqlite_url, tokens=limit)
    fake_openai.delay_s = 0.2
    config = settings(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url)
    replicas = 2 if shared_redis else 1
    async with llm_app(config) as (_, a), llm_app(config) as (_, b):
        clients = [a, b][:replicas]
        responses = await asyncio.gather(*(clients[i % replicas].post("/v1/generate", json=ask(
            f"How long does shipping take? #{i}", max_tokens=50, cache=False)) for i in range(20)))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(refused) == 20 and 1 <= len(ok) <= 5, "reservations are atomic across replicas"
    assert fake_openai.calls == len(ok)
    error = refused[0].json()["error"]
    assert error["type"] == "budget_exceeded" and error["field"] == "monthly_tokens"
    assert "monthly_tokens" in error["message"]
    rows = await usage_rows(sqlite_url)
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows) <= limit


async def test_month_to_date_is_seeded_from_sql_and_settled_to_actual_usage(
        database_url: str, data_dir: Path, fake_openai: FakeOpenAI, redis_url: str) -> None:
    # 1000 tokens; 840 already used this month (per the usage table). Worst case of one call: PROMPT + 100.
    await budget(database_url, tokens=1000, used_tokens=840)
    async with llm_app(settings(database_url, data_dir, fake=fake_openai, redis_url=redis_url)) as (_, client):
        first = await client.post("/v1/generate", json=ask(max_tokens=100, cache=False))
        # settled to 57 + 11 = 68 actually used: 908 of 1000, and another worst case no longer fits
        second = await client.post("/v1/generate", json=ask(max_tokens=100, cache=False))
        small = await client.post("/v1/generate", json=ask(max_tokens=5, cache=False))
    assert first.status_code == 200 and first.headers["X-Budget-Warning"].startswith("monthly_tokens=")
    assert second.status_code == 429 and second.json()["error"]["type"] == "budget_exceeded"
    assert small.status_code == 200
    assert fake_openai.calls == 2


async def test_cost_budget_and_soft_warning(sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI,
                                            redis_url: str) -> None:
    await budget(sqlite_url, usd="0.01", soft_pct=1)
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai, redis_url=redis_url,
                                prices_per_million={"gpt-4o-mini": (100.0, 400.0)})) as (_, client):
        first = await client.post("/v1/generate", json=ask(max_tokens=10, cache=False))
        rest = [await client.post("/v1/generate", json=ask(max_tokens=10, cache=False)) for _ in range(3)]
    # each call costs (57 * 100 + 11 * 400) / 1e6 = $0.0101 > $0.01 budget, so the first fits only by estimate
    assert first.status_code == 200 and "monthly_usd=" in first.headers["X-Budget-Warning"]
    assert [r.status_code for r in rest] == [429] * 3
    assert rest[0].json()["error"]["field"] == "monthly_usd"


async def test_budget_set_by_the_cli_applies_and_other_tenants_are_not_limited(
        sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    await create_tenants(sqlite_url, "demo")
    assert await asyncio.to_thread(cli, ["budget", "set", "--tenant", "demo", "--monthly-tokens", "10"]) == 0
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai)) as (_, client):  # in-process counters
        refused = await client.post("/v1/generate", json=ask())
        other = await client.post("/v1/generate", json=ask(tenant="acme"))
    assert refused.status_code == 429 and other.status_code == 200
