"""A turn whose caller has gone: its deadline passed before the answer (it waited behind an earlier message of
the same conversation), or its client disconnected while the LLM was still writing. Either way the turn is
stored marked `caller_gone`, and the caller's retry with the same message id is replayed from storage, not
answered again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from services.dialogue.app import create_app as create_dialogue
from services.dialogue.storage import MessageRow
from supportbot.contracts.llm import GenerateResponse, Usage
from supportbot.deadline import HEADER
from supportbot.settings import DialogueSettings
from tests.helpers import SERVICE_HEADERS, add_tenants
from tests.stack import running

pytestmark = pytest.mark.anyio

TENANT = "demo"
QUESTION = "How long does standard shipping take?"


class SlowLlm:
    """The llm service, answering after `delay_s`; counts the calls that reached it."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.calls = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(200, json={"status": "ok"})
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        answer = GenerateResponse(text="Standard shipping takes 3 to 5 business days.",
                                  usage=Usage(prompt_tokens=40, completion_tokens=10), provider="openai",
                                  model="gpt-test", cached=False)
        return httpx.Response(200, content=answer.model_dump_json(), headers={"content-type": "application/json"})


def _nlp_down(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, json={"error": {"type": "unavailable", "message": "nlp is away", "service": "nlp"}})


async def _dialogue(database_url: str, data_dir: Path, llm: SlowLlm) -> tuple[FastAPI, dict[str, str]]:
    await add_tenants(database_url, TENANT)
    settings = DialogueSettings(database_url=database_url, data_dir=data_dir, redis_url=None)
    app = create_dialogue(settings, transports={"nlp": httpx.MockTransport(_nlp_down),
                                                "llm": httpx.MockTransport(llm)})
    return app, dict(SERVICE_HEADERS)


async def _rows(app: FastAPI, conversation_id: str) -> list[MessageRow]:
    async with app.state.dialogue.sessions() as session:
        return list(await session.scalars(select(MessageRow).where(MessageRow.conversation_id == conversation_id)
                                          .order_by(MessageRow.id)))


async def _new_conversation(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    created = await client.post("/v1/conversations", json={"tenant_id": TENANT, "channel": "api"}, headers=headers)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _turn(conversation_id: str, message_id: str) -> dict[str, Any]:
    return {"tenant_id": TENANT, "conversation_id": conversation_id, "text": QUESTION,
            "client_message_id": message_id}


async def test_a_turn_past_its_deadline_is_stored_as_caller_gone_and_replayed_on_retry(
        database_url: str, data_dir: Path) -> None:
    llm = SlowLlm(delay_s=0.0)
    app, auth = await _dialogue(database_url, data_dir, llm)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d") as client:
        conversation_id = await _new_conversation(client, auth)
        busy = asyncio.Event()

        async def earlier_message() -> None:
            async with app.state.dialogue.state.locked(conversation_id):
                busy.set()
                await asyncio.sleep(1.8)  # past the deadline by more than any caller waits

        holder = asyncio.create_task(earlier_message())
        await busy.wait()
        late = await client.post("/v1/turns", json=_turn(conversation_id, "m-1"), headers={**auth, HEADER: "300"})
        await holder
        retried = await client.post("/v1/turns", json=_turn(conversation_id, "m-1"), headers={**auth, HEADER: "5000"})
        rows = await _rows(app, conversation_id)
    assert late.status_code == 200, late.text
    assert llm.calls == 0, "with its deadline gone, the llm service is not asked"
    assert [(r.role, r.caller_gone) for r in rows] == [("customer", True), ("bot", True)]
    assert retried.status_code == 200 and retried.json()["duplicate"] is True
    assert retried.json()["message_id"] == late.json()["message_id"] and len(rows) == 2
    assert retried.json()["reply"] == late.json()["reply"]


async def test_a_turn_whose_client_disconnected_is_stored_as_caller_gone_and_not_generated_again(
        database_url: str, data_dir: Path) -> None:
    llm = SlowLlm(delay_s=0.5)
    app, auth = await _dialogue(database_url, data_dir, llm)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d") as client:
        conversation_id = await _new_conversation(client, auth)
        status = await _send_and_hang_up(app, _turn(conversation_id, "m-2"), auth, hang_up_after_s=0.2)
        rows = await _rows(app, conversation_id)
        retried = await client.post("/v1/turns", json=_turn(conversation_id, "m-2"), headers=auth)
        fresh = await client.post("/v1/turns", json=_turn(conversation_id, "m-3"), headers=auth)
        after = await _rows(app, conversation_id)
    assert status is None, "the client hung up before the answer"
    assert [(r.role, r.caller_gone) for r in rows] == [("customer", True), ("bot", True)]
    assert rows[1].provider == "openai", "the answer was made (and paid for) but reached nobody"
    assert retried.status_code == 200 and retried.json()["duplicate"] is True
    assert retried.json()["message_id"] == rows[1].id
    assert fresh.status_code == 200 and fresh.json()["duplicate"] is False
    assert llm.calls == 2, "the retry cost no second generation; only the new message did"
    assert [r.caller_gone for r in after[2:]] == [False, False], "a delivered turn is not marked"


async def _send_and_hang_up(app: FastAPI, body: dict[str, Any], headers: dict[str, str], *,
                            hang_up_after_s: float) -> int | None:
    """POST /v1/turns as a client that disconnects after `hang_up_after_s`: the app sees `http.disconnect`,
    as from a server whose client closed the connection. The status it sent, if it answered before."""
    payload = json.dumps(body).encode()
    gone = asyncio.Event()
    status: list[int] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": payload, "more_body": False}
        if not gone.is_set():
            await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and not gone.is_set():
            status.append(message["status"])

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/turns", "raw_path": b"/v1/turns", "query_string": b"",
             "root_path": "", "server": ("dialogue", 80), "client": ("127.0.0.1", 50000),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                         *((k.lower().encode(), v.encode()) for k, v in headers.items())]}

    async def hang_up() -> None:
        await asyncio.sleep(hang_up_after_s)
        gone.set()

    hanging_up = asyncio.create_task(hang_up())
    await app(scope, receive, send)
    await hanging_up
    return status[0] if status else None
