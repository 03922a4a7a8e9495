"""The database stops under a running system: clear 503s with Retry-After (never a 500), authentication from
the gateway's cache, the llm's budget check, and everything working again once the database is back.

PostgreSQL is shared and is never stopped: a proxy in front of it is.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from gateway.tenants import revoke_key
from services.llm.storage import set_budget
from supportbot.db import make_async_engine, session_factory, transaction
from tests.fake_openai import FakeOpenAI
from tests.helpers import create_tenants
from tests.llm.support import ask, llm_app, settings
from tests.outages.support import PASSWORD, ThreadedProxy
from tests.stack import API_KEY, in_process_stack

pytestmark = pytest.mark.anyio


def assert_clear_503(response: httpx.Response, *, service: str | None) -> None:
    assert response.status_code == 503, response.text
    assert re.fullmatch(r"\d+", response.headers.get("Retry-After", "")), response.headers
    error = response.json()["error"]
    assert error["type"] == "database_unavailable"
    assert error.get("service") == service
    assert "database" in error["message"]


async def until(within_s: float, attempt: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """`attempt()` again every 0.2 s until it answers 2xx or 4xx, at most `within_s` seconds; its last answer."""
    deadline = time.monotonic() + within_s
    while True:
        response = await attempt()
        if response.status_code < 500 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_a_burst_while_the_database_is_stopped_gets_503s_and_keys_work_from_the_cache(
        proxied_postgres: tuple[ThreadedProxy, str], data_dir: Path, model_cache_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    proxy, url = proxied_postgres
    async with in_process_stack(database_url=url, data_dir=data_dir, model_dir=model_cache_dir,
                                gateway_settings={"auth_cache_fresh_s": 0.5}) as stack:
        conversation_id = await stack.new_conversation()
        await stack.say(conversation_id, "Hello there!")  # the database confirms the key

        proxy.stop()
        await asyncio.sleep(0.6)  # past the fresh period: authentication asks the database, and falls back
        turns = [stack.client.post(f"/v1/conversations/{conversation_id}/messages", headers=stack.auth,
                                   json={"text": f"Where is my order? ({i})"}) for i in range(24)]
        creations = [stack.client.post("/v1/conversations", headers=stack.auth) for _ in range(12)]
        burst = await asyncio.gather(*turns, *creations)
        assert sorted({r.status_code for r in burst}) == [503], [r.text for r in burst if r.status_code != 503]
        for response in burst:  # the known key got through to dialogue, which has no database either
            assert_clear_503(response, service="dialogue")
        unknown = await stack.client.post("/v1/conversations", headers={"Authorization": "Bearer sb_never_issued_01"})
        assert_clear_503(unknown, service=None)  # may be valid: not a 401
        transcript = await stack.client.get(f"/v1/conversations/{conversation_id}/messages", headers=stack.auth)
        assert_clear_503(transcript, service="dialogue")
        ready = await stack.client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        assert ready.json()["checks"]["database"].startswith("failed")

        proxy.start(proxy.port)  # the database is back
        back = await until(10, lambda: stack.client.post(f"/v1/conversations/{conversation_id}/messages",
                                                         headers=stack.auth, json={"text": "Thanks!"}))
        assert back.status_code == 200, back.text
        assert (await stack.client.post("/v1/conversations", headers=stack.auth)).status_code == 201
        messages = await stack.transcript(conversation_id)
        assert [m["text"] for m in messages if m["role"] == "customer"] == ["Hello there!", "Thanks!"], \
            "nothing half-stored from the refused turns"

        assert await revoke_key(stack.apps["gateway"].state.sessions, key=API_KEY)
        revoked = await until(5, lambda: _still_accepted(stack.client))
        assert revoked.status_code == 401, "a revoked key stops working within seconds"
    logs = capsys.readouterr().out
    assert PASSWORD not in logs
    assert "unhandled error" not in logs, "no 500s"
    # one warning per service and outage, not one per refused request
    assert 1 <= logs.count("database unavailable, answering 503") <= 3


async def _still_accepted(client: httpx.AsyncClient) -> httpx.Response:
    """The key's next answer, as a 5xx while it is still accepted (so `until` keeps trying)."""
    response = await client.post("/v1/conversations", headers={"Authorization": f"Bearer {API_KEY}"})
    return httpx.Response(599) if response.status_code == 201 else response


async def test_the_llm_answers_without_its_database_and_503s_a_budget_it_cannot_check(
        proxied_postgres: tuple[ThreadedProxy, str], data_dir: Path, fake_openai: FakeOpenAI,
        redis_url: str, redis_prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    proxy, url = proxied_postgres
    await create_tenants(url, "acme", "demo")
    engine = make_async_engine(url)
    try:
        async with transaction(session_factory(engine)) as session:
            await set_budget(session, tenant_id="acme", monthly_tokens=100_000, monthly_usd=None, soft_pct=80)
    finally:
        await engine.dispose()
    config = settings(url, data_dir, fake=fake_openai, redis_url=redis_url, redis_key_prefix=redis_prefix,
                      budget_refresh_s=600.0)
    direct = Redis.from_url(redis_url)
    try:
        async with llm_app(config) as (_, client):
            assert (await client.post("/v1/generate", json=ask(tenant="acme", cache=False))).status_code == 200
            # Tenants it has found in its table stay known while the database is away (supportbot/tenancy.py).
            assert (await client.post("/v1/generate", json=ask(tenant="demo", cache=False))).status_code == 200
            month = datetime.now(UTC).strftime("%Y-%m")
            budget_key = f"{redis_prefix}llm:budget:acme:{month}"
            assert await direct.exists(budget_key), "the month's counters are in Redis, under the test's prefix"

            proxy.stop()
            for tenant in ("demo", "acme"):  # no budget / a budget with counters: answered, usage spooled
                answered = await client.post("/v1/generate", json=ask(tenant=tenant, cache=False))
                assert answered.status_code == 200, answered.text
            await direct.delete(budget_key)  # the counters are gone (a Redis restart) while the database is away
            refused = await client.post("/v1/generate", json=ask(tenant="acme", cache=False))
            assert_clear_503(refused, service=None)
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.headers["Retry-After"]

            proxy.start(proxy.port)
            back = await until(10, lambda: client.post("/v1/generate", json=ask(tenant="acme", cache=False)))
            assert back.status_code == 200, back.text
    finally:
        await direct.aclose()
    assert PASSWORD not in capsys.readouterr().out
