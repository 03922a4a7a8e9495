"""Admin routes through the in-process stack: listing with paging and filters, usage, erasing a conversation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import update

from gateway.app import create_app as create_gateway
from services.dialogue.storage import ConversationRow, MessageRow
from supportbot.db import transaction
from supportbot.http import service_client
from supportbot.settings import GatewaySettings
from tests.fake_openai import FakeOpenAI
from tests.helpers import create_tenants, free_port, redis_keys
from tests.llm.support import usage_rows
from tests.stack import API_KEY, Stack, asgi, in_process_stack, running

pytestmark = pytest.mark.anyio

BASE = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def page_through(stack: Stack, **params: str | int) -> list[dict[str, object]]:
    """Every item of every page, asserting each page's size and that the last one says so."""
    items: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        response = await stack.client.get("/v1/conversations", headers=stack.auth,
                                          params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert len(body["items"]) == int(params.get("limit", 20))


async def test_paging_through_45_conversations_with_filters(database_url: str, data_dir: Path,
                                                            model_cache_dir: Path) -> None:
    async with in_process_stack(database_url=database_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        channels = ["web", "api", "email"]
        ids = []
        for i in range(45):
            created = await stack.client.post("/v1/conversations", headers=stack.auth,
                                              json={"channel": channels[i % 3]})
            ids.append(created.json()["id"])
        others = await create_tenants(database_url, "acme")
        theirs = (await stack.client.post("/v1/conversations", headers=bearer(others["acme"]))).json()["id"]
        # Spread the creation times, pairs sharing one (the id breaks the tie); every fifth is handed off.
        when = {cid: BASE + timedelta(minutes=i // 2) for i, cid in enumerate(ids)}
        sessions = stack.apps["dialogue"].state.dialogue.sessions
        async with transaction(sessions) as session:
            for i, cid in enumerate(ids):
                await session.execute(update(ConversationRow).where(ConversationRow.id == cid)
                                      .values(created_at=when[cid], handoff=i % 5 == 0))
            for n in range(3):
                session.add(MessageRow(conversation_id=ids[7], role="customer", text=f"message {n}",
                                       created_at=BASE + timedelta(hours=1, minutes=n)))

        listed = await page_through(stack, limit=7)
        newest_first = sorted(ids, key=lambda cid: (when[cid], cid), reverse=True)
        assert [item["id"] for item in listed] == newest_first  # each exactly once, in a stable order
        assert theirs not in {item["id"] for item in listed}
        seventh = next(item for item in listed if item["id"] == ids[7])
        assert seventh["message_count"] == 3 and seventh["channel"] == "api" and seventh["handoff"] is False
        assert datetime.fromisoformat(str(seventh["last_message_at"])) == BASE + timedelta(hours=1, minutes=2)
        assert next(item for item in listed if item["id"] == ids[0])["message_count"] == 0
        assert next(item for item in listed if item["id"] == ids[0])["last_message_at"] is None

        web_open = await page_through(stack, limit=4, channel="web", handoff="false")
        assert {item["id"] for item in web_open} == {cid for i, cid in enumerate(ids) if i % 3 == 0 and i % 5}
        assert len(web_open) == len({item["id"] for item in web_open})
        handed = await page_through(stack, limit=2, handoff="true")
        assert [item["id"] for item in handed] == [cid for cid in newest_first if ids.index(cid) % 5 == 0]
        after, before = BASE + timedelta(minutes=5), BASE + timedelta(minutes=12)
        window = await page_through(stack, limit=3, created_after=after.isoformat(),
                                    created_before=before.isoformat().replace("+00:00", "Z"))
        assert [item["id"] for item in window] == [cid for cid in newest_first if after <= when[cid] < before]
        assert len(window) == 14

        agent = (await create_tenants(database_url, keys={"agent": ("demo", "agent", []),
                                                          "api": ("demo", "api", [])}))
        as_agent = await stack.client.get("/v1/conversations", headers=bearer(agent["agent"]))
        assert as_agent.status_code == 200 and len(as_agent.json()["items"]) == 20
        as_api = await stack.client.get("/v1/conversations", headers=bearer(agent["api"]))
        assert as_api.status_code == 403


@pytest.mark.parametrize(("params", "field"), [
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "WyJ5ZXN0ZXJkYXkiLCJhYmMiXQ"}, "cursor"),  # base64 of a list that is not a position
    ({"limit": 0}, "limit"),
    ({"limit": 101}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"channel": "fax"}, "channel"),
    ({"handoff": "maybe"}, "handoff"),
    ({"created_after": "last week"}, "created_after"),
    ({"created_before": "2026-13-01"}, "created_before"),
    ({"created_after": "2026-11-02", "created_before": "2026-11-01"}, "created_before"),
])
async def test_bad_listing_parameters_are_422_naming_the_field(sqlite_url: str, data_dir: Path,
                                                               model_cache_dir: Path, params: dict[str, object],
                                                               field: str) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        response = await stack.client.get("/v1/conversations", headers=stack.auth, params=params)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field
        # dialogue checks its own input too
        direct = await stack.apps["gateway"].state.dialogue.client.get(
            "/v1/conversations", params={"tenant_id": "demo", **params})
        assert direct.status_code == 422 and direct.json()["error"]["field"] == field


class Switch(httpx.AsyncBaseTransport):
    """The llm service as the gateway reaches it: through its ASGI app while `up`, refused while not."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.up = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


async def index_of(redis_url: str, prefix: str, conversation_id: str) -> set[str]:
    """The cache keys (as stored) llm indexed for the conversation."""
    client = Redis.from_url(redis_url)
    try:
        members = await client.smembers(f"{prefix}llm:conversation:demo:{conversation_id}:cache-keys")
        return {prefix + m.decode() for m in members}
    finally:
        await client.aclose()


async def test_erase_removes_transcript_state_and_cached_replies_and_keeps_usage_counts(
        sqlite_url: str, data_dir: Path, model_cache_dir: Path, fake_openai: FakeOpenAI, redis_url: str,
        redis_prefix: str) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir,
                                redis_url=redis_url, openai_base_url=fake_openai.base_url,
                                openai_api_key="sk-test") as stack:
        gone, kept = await stack.new_conversation(), await stack.new_conversation()
        for cid in (gone, kept):
            answer = await stack.say(cid, "How long does standard shipping take?")
            assert answer["provider"] == "openai", answer
        await stack.say(gone, "And how much does express shipping cost?")
        llm = stack.apps["llm"]
        await llm.state.recorder.flush()
        gone_entries, kept_entries = (await index_of(redis_url, redis_prefix, gone),
                                      await index_of(redis_url, redis_prefix, kept))
        assert len(gone_entries) == 2 and len(kept_entries) == 1
        before = await redis_keys(redis_url, redis_prefix)
        assert gone_entries | kept_entries <= before
        assert f"{redis_prefix}dialogue:state:{gone}" in before
        rows_before = await usage_rows(sqlite_url)
        assert sorted(r.conversation_id for r in rows_before) == sorted([gone, gone, kept])

        others = await create_tenants(sqlite_url, "acme", keys={"agent": ("demo", "agent", []),
                                                                "api": ("demo", "api", [])})
        for key in (others["acme"], others["agent"], others["api"]):  # another tenant's admin, lesser roles
            refused = await stack.client.delete(f"/v1/conversations/{gone}", headers=bearer(key))
            assert refused.status_code == (404 if key == others["acme"] else 403), refused.text
        erased = await stack.client.delete(f"/v1/conversations/{gone}", headers=stack.auth)
        assert erased.status_code == 204, erased.text
        assert erased.content == b""

        assert (await stack.client.get(f"/v1/conversations/{gone}/messages", headers=stack.auth)).status_code == 404
        listed = (await stack.client.get("/v1/conversations", headers=stack.auth)).json()["items"]
        assert [item["id"] for item in listed] == [kept]
        left = await redis_keys(redis_url, redis_prefix)
        assert not any(gone in key and ":erased" not in key for key in left), left  # state, index, lock
        # The first question's entry was shared with `kept`: erased all the same (the safe choice).
        assert not (gone_entries & left)
        assert f"{redis_prefix}dialogue:state:{kept}" in left
        rows = await usage_rows(sqlite_url)
        assert [(r.request_id, r.prompt_tokens, r.completion_tokens, r.cost_usd) for r in rows] == \
               [(r.request_id, r.prompt_tokens, r.completion_tokens, r.cost_usd) for r in rows_before]
        assert sorted(str(r.conversation_id) for r in rows) == sorted(["None", "None", kept])

        again = await stack.client.delete(f"/v1/conversations/{gone}", headers=stack.auth)
        assert again.status_code == 404
        unknown = await stack.client.delete("/v1/conversations/neverexisted1", headers=stack.auth)
        assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "conversation_id"
        assert (await stack.client.get(f"/v1/conversations/{kept}/messages", headers=stack.auth)).status_code == 200


async def test_llm_down_during_erase_is_503_and_the_retry_finishes_it(
        sqlite_url: str, data_dir: Path, model_cache_dir: Path, fake_openai: FakeOpenAI, redis_url: str,
        redis_prefix: str) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir,
                                redis_url=redis_url, openai_base_url=fake_openai.base_url,
                                openai_api_key="sk-test") as stack:
        gateway, llm = stack.apps["gateway"], stack.apps["llm"]
        switch = Switch(asgi(llm))
        await gateway.state.llm.aclose()
        gateway.state.llm = service_client("llm", "http://llm", GatewaySettings(), switch)
        cid = await stack.new_conversation()
        await stack.say(cid, "How long does standard shipping take?")
        await llm.state.recorder.flush()
        entries = await index_of(redis_url, redis_prefix, cid)
        assert len(entries) == 1

        switch.up = False
        usage = await stack.client.get("/v1/usage", headers=stack.auth)
        assert usage.status_code == 503 and int(usage.headers["Retry-After"]) > 0
        half = await stack.client.delete(f"/v1/conversations/{cid}", headers=stack.auth)
        assert half.status_code == 503 and int(half.headers["Retry-After"]) > 0
        message = half.json()["error"]["message"]
        assert "transcript and state are erased" in message and "retry the DELETE" in message
        assert (await stack.client.get(f"/v1/conversations/{cid}/messages", headers=stack.auth)).status_code == 404
        assert entries <= await redis_keys(redis_url, redis_prefix)  # llm's part is still there
        still = await stack.client.delete(f"/v1/conversations/{cid}", headers=stack.auth)
        assert still.status_code == 503  # not a 404 while llm may still hold something of it

        switch.up = True
        finished = await stack.client.delete(f"/v1/conversations/{cid}", headers=stack.auth)
        assert finished.status_code == 204, finished.text
        assert not (entries & await redis_keys(redis_url, redis_prefix))
        assert [r.conversation_id for r in await usage_rows(sqlite_url)] == [None]
        assert (await stack.client.delete(f"/v1/conversations/{cid}", headers=stack.auth)).status_code == 404

        report = await stack.client.get("/v1/usage", headers=stack.auth)
        assert report.status_code == 200
        assert report.json()["by_provider_model"][0]["requests"] == 1  # the counts stayed
        api_key = (await create_tenants(sqlite_url, keys={"api": ("demo", "api", [])}))["api"]
        assert (await stack.client.get("/v1/usage", headers=bearer(api_key))).status_code == 403


async def test_usage_with_llm_unreachable_is_503(sqlite_url: str, data_dir: Path) -> None:
    settings = GatewaySettings(database_url=sqlite_url, data_dir=data_dir, bootstrap_api_key=API_KEY,
                               llm_url=f"http://127.0.0.1:{free_port()}")
    app = create_gateway(settings)
    async with running(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            response = await client.get("/v1/usage", headers=bearer(API_KEY), params={"since": "2026-11-01"})
            bad = await client.get("/v1/usage", headers=bearer(API_KEY), params={"since": "soon"})
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"]["service"] == "llm"
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "since"
