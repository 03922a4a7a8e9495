"""dialogue validates what its callers send: bad input is a 4xx naming the field, never a 500 (NUL bytes that
PostgreSQL cannot store included), and a tenant it does not know is a 404."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.dialogue.app import create_app
from supportbot.settings import DialogueSettings
from tests.helpers import SERVICE_HEADERS, add_tenants, free_port
from tests.stack import running

pytestmark = pytest.mark.anyio


@pytest.fixture
async def dialogue(database_url: str, data_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """dialogue with nlp and llm down (turns are answered degraded) and tenant `demo`; a conversation of it."""
    app = create_app(DialogueSettings(database_url=database_url, data_dir=data_dir, redis_url=None,
                                      nlp_url=f"http://127.0.0.1:{free_port()}",
                                      llm_url=f"http://127.0.0.1:{free_port()}"))
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dialogue",
                                               headers=SERVICE_HEADERS) as client:
        await add_tenants(database_url, "demo")
        created = await client.post("/v1/conversations", json={"tenant_id": "demo"})
        assert created.status_code == 201, created.text
        yield client, created.json()["id"]


def turn(conversation: str, **changes: Any) -> dict[str, Any]:
    return {"tenant_id": "demo", "conversation_id": conversation, "text": "Where is my order?", **changes}


# (method, path, query, body) with CONV for the conversation's id; the field the 4xx must name.
BAD: list[tuple[str, str, dict[str, Any] | None, Any, str]] = [
    ("POST", "/v1/turns", None, {"text": "hello\u0000world"}, "text"),
    ("POST", "/v1/turns", None, {"text": "\u0000"}, "text"),
    ("POST", "/v1/turns", None, {"text": "broken \ud800 surrogate"}, "text"),
    ("POST", "/v1/turns", None, {"text": " \n\t "}, "text"),
    ("POST", "/v1/turns", None, {"text": ""}, "text"),
    ("POST", "/v1/turns", None, {"text": "x" * 4001}, "text"),
    ("POST", "/v1/turns", None, {"text": 42}, "text"),
    ("POST", "/v1/turns", None, {"tenant_id": "de\u0000mo"}, "tenant_id"),
    ("POST", "/v1/turns", None, {"tenant_id": "../demo"}, "tenant_id"),
    ("POST", "/v1/turns", None, {"conversation_id": "short"}, "conversation_id"),
    ("POST", "/v1/turns", None, {"client_message_id": "m\u00001"}, "client_message_id"),
    ("POST", "/v1/turns", None, {"channel": "fax"}, "channel"),
    ("POST", "/v1/turns", None, {"surprise": True}, "surprise"),
    ("POST", "/v1/conversations", None, {"tenant_id": "demo\u0000"}, "tenant_id"),
    ("POST", "/v1/conversations", None, {"tenant_id": "demo", "token_hash": "nope"}, "token_hash"),
    ("GET", "/v1/conversations/CONV/messages", {"tenant_id": "de\u0000mo"}, None, "tenant_id"),
    ("GET", "/v1/conversations/CONV/messages", {}, None, "tenant_id"),
    ("GET", "/v1/conversations/bad%00id/messages", {"tenant_id": "demo"}, None, "conversation_id"),
    ("GET", "/v1/conversations", {"tenant_id": "demo", "limit": "0"}, None, "limit"),
    ("GET", "/v1/conversations", {"tenant_id": "demo", "cursor": "\u0000"}, None, "cursor"),
    ("GET", "/v1/conversations", {"tenant_id": "demo", "created_after": "0001-01-01T00:00:00+05:00"}, None,
     "created_after"),
    ("GET", "/v1/conversations", {"tenant_id": "demo", "created_before": "9999-12-31T23:59:59-05:00"}, None,
     "created_before"),
    ("GET", "/v1/conversations", {"tenant_id": "demo", "created_after": "yesterday"}, None, "created_after"),
    ("DELETE", "/v1/conversations/CONV", {"tenant_id": "DEMO"}, None, "tenant_id"),
]


@pytest.mark.parametrize(("method", "path", "query", "body", "field"), BAD,
                         ids=[f"{m} {p} {f} {i}" for i, (m, p, _, _, f) in enumerate(BAD)])
async def test_bad_input_is_a_4xx_naming_the_field(dialogue: tuple[httpx.AsyncClient, str], method: str, path: str,
                                                   query: dict[str, Any] | None, body: Any, field: str) -> None:
    client, conversation = dialogue
    if path == "/v1/turns":
        body = turn(conversation, **body)
    # Escaped JSON (`\\u0000`, `\\ud800`), as a client sends what it cannot send raw.
    response = await client.request(method, path.replace("CONV", conversation), params=query,
                                    content=json.dumps(body) if body is not None else None,
                                    headers={"content-type": "application/json"} if body is not None else None)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["field"] is not None and field in error["field"], error
    assert "\u0000" not in response.text
    # Nothing was stored: the conversation still has no message, and a good turn is still answered.
    transcript = await client.get(f"/v1/conversations/{conversation}/messages", params={"tenant_id": "demo"})
    assert transcript.status_code == 200 and transcript.json()["messages"] == []


async def test_a_nul_byte_and_a_body_that_is_not_json(dialogue: tuple[httpx.AsyncClient, str]) -> None:
    client, conversation = dialogue
    raw = ('{"tenant_id": "demo", "conversation_id": "%s", "text": "card 4111\\u0000"}' % conversation).encode()
    nul = await client.post("/v1/turns", content=raw, headers={"content-type": "application/json"})
    assert nul.status_code == 422 and nul.json()["error"]["field"] == "text", nul.text
    garbage = await client.post("/v1/turns", content=b"\x00\xff{", headers={"content-type": "application/json"})
    assert garbage.status_code in (400, 422), garbage.text
    fine = await client.post("/v1/turns", json=turn(conversation))
    assert fine.status_code == 200 and fine.json()["degraded"] is True, fine.text


async def test_tenants_that_do_not_exist_are_404_naming_tenant_id(dialogue: tuple[httpx.AsyncClient, str],
                                                                  database_url: str) -> None:
    client, conversation = dialogue
    calls = [("POST", "/v1/conversations", None, {"tenant_id": "nobody"}),
             ("POST", "/v1/turns", None, turn(conversation, tenant_id="nobody")),
             ("GET", f"/v1/conversations/{conversation}/messages", {"tenant_id": "nobody"}, None),
             ("GET", "/v1/conversations", {"tenant_id": "nobody"}, None),
             ("DELETE", f"/v1/conversations/{conversation}", {"tenant_id": "nobody"}, None)]
    for method, path, query, body in calls:
        response = await client.request(method, path, params=query, json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == {"type": "not_found", "message": "tenant nobody not found",
                                            "field": "tenant_id"}, path
    # Created a moment later, it is found at once (unknown tenants are not cached).
    await add_tenants(database_url, "nobody")
    assert (await client.post("/v1/conversations", json={"tenant_id": "nobody"})).status_code == 201
