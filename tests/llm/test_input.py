"""llm validates what its callers send: bad input is a 4xx naming the field, never a 500; a tenant without a
row is a 404 before any cache, budget or provider is asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from supportbot.contracts.llm import MAX_PROMPT_CHARS
from tests.fake_openai import FakeOpenAI
from tests.llm.support import ask, llm_app, settings, usage_rows

pytestmark = pytest.mark.anyio
USER = [{"role": "user", "content": "How long does shipping take?"}]


def with_message(**message: Any) -> dict[str, Any]:
    return ask(messages=[{"role": "user", **message}])


def chat(**changes: Any) -> dict[str, Any]:
    return {"model": "supportbot", "messages": USER, "user": "demo", **changes}


# (path, body or query, the field the 4xx must name, in part)
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/generate", with_message(content="a\u0000b"), "messages.0.content"),
    ("/v1/generate", with_message(content="broken \ud800"), "messages.0.content"),
    ("/v1/generate", with_message(content=""), "messages.0.content"),
    ("/v1/generate", with_message(content="x" * 32_001), "messages.0.content"),
    ("/v1/generate", ask(messages=[{"role": "user", "content": "x" * 32_000}] * 13), "messages"),
    ("/v1/generate", ask(messages=[]), "messages"),
    ("/v1/generate", ask(tenant="De mo"), "tenant_id"),
    ("/v1/generate", ask(conversation_id="c\u0000nversation"), "conversation_id"),
    ("/v1/generate", ask(max_tokens=8193), "max_tokens"),
    ("/v1/generate", ask(stop=[""]), "stop.0"),
    ("/v1/generate", ask(stop=["\u0000"]), "stop.0"),
    ("/v1/generate", ask(context={"intent": "x\u0000"}), "context.intent"),
    ("/v1/generate", ask(context={"knowledge": [{"title": "t", "path": "p", "snippet": "s\u0000"}]}),
     "context.knowledge.0.snippet"),
    ("/v1/generate", ask(tools=[{"function": {"name": "look up"}}]), "tools.0.function.name"),
    ("/v1/generate", ask(temperature=3), "temperature"),
    ("/v1/chat/completions", chat(messages=[{"role": "user", "content": ""}]), "messages.0"),
    ("/v1/chat/completions", chat(messages=[{"role": "user", "content": "a\u0000b"}]), "messages.0.content"),
    ("/v1/chat/completions", chat(messages=[{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]),
     "messages.0.content"),
    ("/v1/chat/completions", chat(messages=[{"role": "user", "content": "x" * 32_000}] * 13), "messages"),
    ("/v1/chat/completions", chat(model=""), "model"),
    ("/v1/chat/completions", chat(stop=""), "stop"),
    ("/v1/chat/completions", chat(user="../demo"), "user"),
    ("/v1/chat/completions", chat(n=2), "n"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD, ids=[f"{p} {f} {i}" for i, (p, _, f) in enumerate(BAD)])
async def test_bad_input_is_a_4xx_naming_the_field(sqlite_url: str, data_dir: Path, path: str,
                                                   body: dict[str, Any], field: str) -> None:
    assert sum(len(m["content"]) for m in ask(messages=[{"role": "user", "content": "x" * 32_000}] * 13)[
        "messages"]) > MAX_PROMPT_CHARS
    async with llm_app(settings(sqlite_url, data_dir)) as (_, client):
        # Escaped JSON (`\\u0000`, `\\ud800`), as a client sends what it cannot send raw.
        response = await client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["field"] is not None and error["field"].startswith(field), error
    assert await usage_rows(sqlite_url) == []


@pytest.mark.parametrize(("request_", "field"), [
    ({"method": "GET", "url": "/v1/usage", "params": {"tenant_id": "demo", "since": "0001-01-01T00:00:00+05:00"}},
     "since"),
    ({"method": "GET", "url": "/v1/usage", "params": {"tenant_id": "demo\u0000"}}, "tenant_id"),
    ({"method": "DELETE", "url": "/v1/conversations/conv_12345678", "params": {"tenant_id": ""}}, "tenant_id"),
    ({"method": "DELETE", "url": "/v1/conversations/x%00y", "params": {"tenant_id": "demo"}}, "conversation_id"),
    ({"method": "POST", "url": "/v1/chat/completions", "json": chat(user=None),
      "headers": {"X-Supportbot-Tenant": "Demo"}}, "X-Supportbot-Tenant"),
])
async def test_bad_query_and_headers_are_4xx_naming_them(sqlite_url: str, data_dir: Path,
                                                         request_: dict[str, Any], field: str) -> None:
    async with llm_app(settings(sqlite_url, data_dir)) as (_, client):
        response = await client.request(**request_)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["field"] == field


async def test_a_tenant_without_a_row_gets_404_and_no_generation(database_url: str, data_dir: Path,
                                                               fake_openai: FakeOpenAI) -> None:
    async with llm_app(settings(database_url, data_dir, fake=fake_openai)) as (_, client):
        answers = [
            await client.post("/v1/generate", json=ask(tenant="ghost", max_tokens=8192)),
            await client.post("/v1/generate", json=ask(tenant="ghost", stream=True)),
            await client.post("/v1/chat/completions", json=chat(user="ghost", max_tokens=8192)),
            await client.post("/v1/chat/completions", json=chat(user=None), headers={"X-Supportbot-Tenant": "ghost"}),
            await client.get("/v1/usage", params={"tenant_id": "ghost"}),
            await client.delete("/v1/conversations/conv_12345678", params={"tenant_id": "ghost"}),
        ]
        known = await client.post("/v1/generate", json=ask(tenant="acme"))
    for answer in answers:
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == {"type": "not_found", "message": "tenant ghost not found",
                                          "field": "tenant_id"}
    assert known.status_code == 200 and known.json()["provider"] == "openai"
    assert fake_openai.calls == 1  # only the known tenant's
    assert [row.tenant_id for row in await usage_rows(database_url)] == ["acme"]


async def test_while_the_database_is_away_known_tenants_are_served_and_unknown_ones_get_503(
        tmp_path: Path, data_dir: Path) -> None:
    import shutil

    folder = tmp_path / "db"
    folder.mkdir()
    url = f"sqlite:///{folder / 'supportbot.db'}"
    async with llm_app(settings(url, data_dir)) as (_, client):
        assert (await client.post("/v1/generate", json=ask(cache=False))).status_code == 200
        shutil.rmtree(folder)  # the volume went away
        known = await client.post("/v1/generate", json=ask(cache=False))
        unknown = await client.post("/v1/generate", json=ask(tenant="acme", cache=False))
    assert known.status_code == 200, known.text
    assert unknown.status_code == 503 and unknown.json()["error"]["type"] == "database_unavailable", unknown.text
    assert unknown.headers["Retry-After"]
