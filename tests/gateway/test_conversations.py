"""The public API through the whole in-process stack, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.tenants import create_tenant
from tests.stack import in_process_stack

pytestmark = pytest.mark.anyio


async def test_conversation_round_trip(database_url: str, data_dir: Path, model_cache_dir: Path) -> None:
    async with in_process_stack(database_url=database_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        created = await stack.client.post("/v1/conversations", headers=stack.auth)
        assert created.status_code == 201
        conversation_id = created.json()["id"]

        hello = await stack.client.post(f"/v1/conversations/{conversation_id}/messages", headers=stack.auth,
                                        json={"text": "Hello there!"})
        assert hello.status_code == 200, hello.text
        body = hello.json()
        assert body["intent"]["name"] == "greeting"
        assert 0 < body["intent"]["confidence"] <= 1
        assert body["handoff"] is False
        assert body["provider"] == "template"
        assert body["reply"]["text"]

        question = await stack.client.post(f"/v1/conversations/{conversation_id}/messages", headers=stack.auth,
                                           json={"text": "How long does standard shipping take?"})
        answer = question.json()
        assert question.status_code == 200
        # No OpenAI key: the offline responder answers from the knowledge base and says it is offline.
        assert answer["provider"] == "offline"
        assert "offline" in answer["reply"]["text"].lower()
        assert answer["sources"], "a knowledge-base answer must cite its source"
        assert any("shipping" in s["path"] for s in answer["sources"])

        transcript = await stack.client.get(f"/v1/conversations/{conversation_id}/messages", headers=stack.auth)
        assert transcript.status_code == 200
        messages = transcript.json()["messages"]
        assert [m["role"] for m in messages] == ["customer", "bot", "customer", "bot"]
        assert messages[0]["text"] == "Hello there!"
        assert messages[2]["text"] == "How long does standard shipping take?"
        assert messages[1]["text"] == body["reply"]["text"]
        assert messages[0]["intent"] == "greeting"


async def test_authentication_and_tenant_isolation(sqlite_url: str, data_dir: Path, model_cache_dir: Path) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        missing = await stack.client.post("/v1/conversations")
        assert missing.status_code == 401
        assert missing.json()["error"]["field"] == "Authorization"
        wrong = await stack.client.post("/v1/conversations", headers={"Authorization": "Bearer sb_nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["message"] == "invalid API key"
        basic = await stack.client.post("/v1/conversations", headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert basic.status_code == 401

        other_key = await create_tenant(stack.apps["gateway"].state.sessions, tenant_id="acme")
        theirs = (await stack.client.post("/v1/conversations",
                                          headers={"Authorization": f"Bearer {other_key}"})).json()["id"]
        for response in (
            await stack.client.get(f"/v1/conversations/{theirs}/messages", headers=stack.auth),
            await stack.client.post(f"/v1/conversations/{theirs}/messages", headers=stack.auth, json={"text": "hi"}),
        ):
            assert response.status_code == 404
            assert response.json()["error"]["type"] == "not_found"
        unknown = await stack.client.get("/v1/conversations/doesnotexist123/messages", headers=stack.auth)
        assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "text"),
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
        ({"text": 42}, "text"),
        ({"text": "x" * 4001}, "text"),
        ({"text": "hi", "surprise": 1}, "surprise"),
    ],
)
async def test_bad_message_gets_422_naming_the_field(
    payload: dict[str, object], field: str, sqlite_url: str, data_dir: Path, model_cache_dir: Path
) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        conversation_id = (await stack.client.post("/v1/conversations", headers=stack.auth)).json()["id"]
        response = await stack.client.post(f"/v1/conversations/{conversation_id}/messages", headers=stack.auth,
                                           json=payload)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["type"] == "validation_error"
        assert error["field"] == field
        assert field in error["message"]
        transcript = await stack.client.get(f"/v1/conversations/{conversation_id}/messages", headers=stack.auth)
        assert transcript.json()["messages"] == []


async def test_malformed_json_and_bad_ids(sqlite_url: str, data_dir: Path, model_cache_dir: Path) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        conversation_id = (await stack.client.post("/v1/conversations", headers=stack.auth)).json()["id"]
        broken = await stack.client.post(f"/v1/conversations/{conversation_id}/messages",
                                         headers={**stack.auth, "content-type": "application/json"},
                                         content=b"\xff\xfe{not json")
        assert broken.status_code == 400
        assert broken.json()["error"]["type"] == "bad_request"
        bad_id = await stack.client.get("/v1/conversations/bad%20id!/messages", headers=stack.auth)
        assert bad_id.status_code == 422
        assert bad_id.json()["error"]["field"] == "conversation_id"
        channel = await stack.client.post("/v1/conversations", headers=stack.auth, json={"channel": "fax"})
        assert channel.status_code == 422
        assert channel.json()["error"]["field"] == "channel"
