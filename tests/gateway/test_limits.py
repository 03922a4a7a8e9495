"""Rate limits (requests, LLM tokens, failed authentications) and request size limits at the gateway.

The gateway runs with the real dialogue and llm services in process (ASGI transports; the OpenAI-compatible
fake behind llm, so turns spend tokens) and nlp away, which dialogue answers without (degraded): nlp's model
is no part of what is tested here. Storage is real: SQLite or PostgreSQL, and Redis under the test's prefix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis as redis_sync
from sqlalchemy import event

from gateway.app import create_app as create_gateway
from services.dialogue.app import create_app as create_dialogue
from services.llm.app import create_app as create_llm
from supportbot.settings import DialogueSettings, GatewaySettings, LlmSettings
from tests.fake_openai import FakeOpenAI
from tests.helpers import ThreadedProxy, create_tenants, free_port
from tests.stack import asgi, running

pytestmark = pytest.mark.anyio

NO_LIMITS = {"rate_limit_per_key": "off", "rate_limit_per_tenant": "off", "token_limit_per_key": "off",
             "token_limit_per_tenant": "off", "auth_failure_limit": "off"}
QUESTION = "How long does standard shipping take to Canada, number {}?"


@dataclass
class Gateway:
    app: Any
    keys: dict[str, str]

    def client(self, address: str = "203.0.113.7") -> httpx.AsyncClient:
        """A client calling from `address` (what the gateway sees as the client host)."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://gateway")

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


@asynccontextmanager
async def gateway(database_url: str, data_dir: Path, *, openai: FakeOpenAI | None = None,
                  redis_url: str | None = None, **limits: Any) -> AsyncIterator[Gateway]:
    """Tenants `acme` (keys "acme", an admin key, and "acme2", an api key) and `other`; `limits`: GatewaySettings
    fields (every rate limit is off unless given)."""
    keys = await create_tenants(database_url, "acme", "other", keys={"acme2": ("acme", "api", [])})
    common: dict[str, Any] = {"database_url": database_url, "data_dir": data_dir, "redis_url": redis_url}
    llm = create_llm(LlmSettings(**common, openai_base_url=openai.base_url if openai else None,
                                 openai_api_key="sk-test" if openai else None, openai_max_retries=0,
                                 openai_timeout_s=5.0))
    dialogue = create_dialogue(DialogueSettings(**common, nlp_url=f"http://127.0.0.1:{free_port()}"),
                               transports={"llm": asgi(llm)})
    app = create_gateway(GatewaySettings(**common, **{**NO_LIMITS, **limits}), transports={"dialogue": asgi(dialogue)})
    with anyio.fail_after(60):  # a hang fails the test, with where it hung
        async with AsyncExitStack() as stack:
            for service in (llm, dialogue, app):
                await stack.enter_async_context(running(service))
            yield Gateway(app, keys)


async def new_conversation(client: httpx.AsyncClient, auth: dict[str, str]) -> str:
    created = await client.post("/v1/conversations", headers=auth)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def assert_rate_limited(response: httpx.Response, field: str, limit: int) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["type"] == "rate_limited" and error["field"] == field and field in error["message"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert response.headers["RateLimit-Limit"] == str(limit)
    assert response.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60


async def test_requests_per_key(sqlite_url: str, data_dir: Path) -> None:
    async with gateway(sqlite_url, data_dir, rate_limit_per_key="3/minute") as gw, gw.client() as client:
        conversation = await new_conversation(client, gw.auth("acme"))
        path = f"/v1/conversations/{conversation}/messages"
        remaining = []
        for _ in range(2):
            read = await client.get(path, headers=gw.auth("acme"))
            assert read.status_code == 200
            assert read.headers["RateLimit-Limit"] == "3"
            assert 1 <= int(read.headers["RateLimit-Reset"]) <= 60
            remaining.append(read.headers["RateLimit-Remaining"])
        assert remaining == ["1", "0"]
        for _ in range(3):  # refused, and refusals do not push the window out
            assert_rate_limited(await client.get(path, headers=gw.auth("acme")), "RATE_LIMIT_PER_KEY", 3)
        # The limit is the key's: the tenant's other key and another tenant are untouched.
        assert (await client.get(path, headers=gw.auth("acme2"))).status_code == 200
        assert (await client.post("/v1/conversations", headers=gw.auth("other"))).status_code == 201


async def test_requests_per_tenant(database_url: str, data_dir: Path) -> None:
    async with gateway(database_url, data_dir, rate_limit_per_tenant="4/minute",
                       rate_limit_per_key="100/minute") as gw, gw.client() as client:
        statuses = [(await client.post("/v1/conversations", headers=gw.auth(key))).status_code
                    for key in ("acme", "acme2") * 3]
        assert statuses == [201, 201, 201, 201, 429, 429]
        refused = await client.post("/v1/conversations", headers=gw.auth("acme"))
        assert_rate_limited(refused, "RATE_LIMIT_PER_TENANT", 4)
        # Successful answers report the limit closest to running out (here the tenant's).
        other = await client.post("/v1/conversations", headers=gw.auth("other"))
        assert other.status_code == 201
        assert (other.headers["RateLimit-Limit"], other.headers["RateLimit-Remaining"]) == ("4", "3")


async def test_tokens_per_key(sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI) -> None:
    # Each LLM answer of the fake spends 57 + 11 = 68 tokens.
    async with gateway(sqlite_url, data_dir, openai=fake_openai, token_limit_per_key="100/minute") as gw, \
            gw.client() as client:
        conversation = await new_conversation(client, gw.auth("acme"))
        path = f"/v1/conversations/{conversation}/messages"
        first = await client.post(path, headers=gw.auth("acme"), json={"text": QUESTION.format(1)})
        assert first.status_code == 200, first.text
        assert first.json()["usage"] == {"prompt_tokens": 57, "completion_tokens": 11}
        # 68 of 100 spent: the next turn is let in and may cross the line (it is finished, not cut off) ...
        second = await client.post(path, headers={**gw.auth("acme"), "Idempotency-Key": "m-2"},
                                   json={"text": QUESTION.format(2)})
        assert second.status_code == 200, second.text
        # ... and after it (136 spent) the key gets no more turns this minute ...
        refused = await client.post(path, headers=gw.auth("acme"), json={"text": QUESTION.format(3)})
        assert_rate_limited(refused, "TOKEN_LIMIT_PER_KEY", 100)
        assert fake_openai.calls == 2
        # ... while reading is not a turn, and the tenant's other key has tokens of its own.
        assert (await client.get(path, headers=gw.auth("acme"))).status_code == 200
        theirs = await new_conversation(client, gw.auth("acme2"))
        turn = await client.post(f"/v1/conversations/{theirs}/messages", headers=gw.auth("acme2"),
                                 json={"text": QUESTION.format(4)})
        assert turn.status_code == 200, turn.text


async def test_replayed_turn_costs_no_tokens(sqlite_url: str, data_dir: Path, fake_openai: FakeOpenAI) -> None:
    async with gateway(sqlite_url, data_dir, openai=fake_openai, token_limit_per_key="100/minute") as gw, \
            gw.client() as client:
        conversation = await new_conversation(client, gw.auth("acme"))
        path = f"/v1/conversations/{conversation}/messages"
        sent = {"headers": {**gw.auth("acme"), "Idempotency-Key": "m-1"}, "json": {"text": QUESTION.format(1)}}
        assert (await client.post(path, **sent)).status_code == 200
        for _ in range(3):  # a retried delivery is answered from storage: charged once, not four times
            again = await client.post(path, **sent)
            assert again.status_code == 200 and again.json()["duplicate"] is True
        assert (await client.post(path, headers=gw.auth("acme"), json={"text": QUESTION.format(2)})).status_code == 200
        assert fake_openai.calls == 2


async def test_tenant_tokens_refuse_a_key_with_tokens_left(sqlite_url: str, data_dir: Path,
                                                           fake_openai: FakeOpenAI) -> None:
    async with gateway(sqlite_url, data_dir, openai=fake_openai, token_limit_per_key="1000/minute",
                       token_limit_per_tenant="100/minute") as gw, gw.client() as client:
        conversation = await new_conversation(client, gw.auth("acme"))
        for n in (1, 2):
            turn = await client.post(f"/v1/conversations/{conversation}/messages", headers=gw.auth("acme"),
                                     json={"text": QUESTION.format(n)})
            assert turn.status_code == 200, turn.text
        theirs = await new_conversation(client, gw.auth("acme2"))
        refused = await client.post(f"/v1/conversations/{theirs}/messages", headers=gw.auth("acme2"),
                                    json={"text": QUESTION.format(3)})
        assert_rate_limited(refused, "TOKEN_LIMIT_PER_TENANT", 100)


async def test_failed_authentication_is_throttled_per_address(sqlite_url: str, data_dir: Path) -> None:
    async with gateway(sqlite_url, data_dir, auth_failure_limit="3/minute") as gw:
        engine = gw.app.state.sessions.kw["bind"]
        statements: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute",
                     lambda _c, _cur, statement, *_: statements.append(statement))
        async with gw.client("198.51.100.1") as attacker, gw.client("198.51.100.2") as bystander:
            known = await new_conversation(attacker, gw.auth("acme"))  # a valid key this address used before
            await gw.app.state.authenticator.flush()  # its last use is written now, not while we count
            bad = {"Authorization": "Bearer sb_not_a_key_0000000000000000000000"}
            for _ in range(3):
                assert (await attacker.post("/v1/conversations", headers=bad)).status_code == 401
            statements.clear()
            for _ in range(5):
                throttled = await attacker.post("/v1/conversations", headers=bad)
                assert_rate_limited(throttled, "AUTH_FAILURE_LIMIT", 3)
            assert not [s for s in statements if "api_keys" in s], "throttled keys must not be looked up"
            # A key the gateway knows to be valid still works from that address ...
            assert (await attacker.get(f"/v1/conversations/{known}/messages",
                                       headers=gw.auth("acme"))).status_code == 200
            # ... one it has not seen is refused like the bad ones until the window has room again ...
            assert (await attacker.post("/v1/conversations", headers=gw.auth("other"))).status_code == 429
            # ... and other addresses are not affected.
            assert (await bystander.post("/v1/conversations", headers=bad)).status_code == 401
            assert (await bystander.post("/v1/conversations", headers=gw.auth("other"))).status_code == 201


async def test_request_size_limits(sqlite_url: str, data_dir: Path) -> None:
    async with gateway(sqlite_url, data_dir, max_request_bytes=8192, max_headers=20,
                       max_header_bytes=2048) as gw, gw.client() as client:
        conversation = await new_conversation(client, gw.auth("acme"))
        path = f"/v1/conversations/{conversation}/messages"
        # A 4,000-character message fits (4,000 × 2 bytes of UTF-8 would not here: the limit is in bytes).
        fits = await client.post(path, headers=gw.auth("acme"), json={"text": "ok " * 1333})
        assert fits.status_code == 200, fits.text

        declared = await client.post(path, headers=gw.auth("acme"), content=b'{"text": "' + b"x" * 9000 + b'"}')
        assert declared.status_code == 413
        assert declared.json()["error"] == {"type": "payload_too_large", "field": "body",
                                            "message": declared.json()["error"]["message"]}
        assert "MAX_REQUEST_BYTES" in declared.json()["error"]["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            yield b'{"text": "'
            for _ in range(20):
                yield b"y" * 1000
            yield b'"}'

        streamed = await client.post(path, headers={**gw.auth("acme"), "content-type": "application/json"},
                                     content=chunks())
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413, streamed.text
        assert streamed.json()["error"]["type"] == "payload_too_large"

        many = await client.get(path, headers={**gw.auth("acme"), **{f"x-h{i}": "1" for i in range(25)}})
        assert many.status_code == 431
        assert many.json()["error"]["type"] == "request_header_fields_too_large"
        assert "MAX_HEADERS" in many.json()["error"]["message"]
        big = await client.get(path, headers={**gw.auth("acme"), "x-big": "z" * 3000})
        assert big.status_code == 431 and "MAX_HEADER_BYTES" in big.json()["error"]["message"]
        transcript = await client.get(path, headers=gw.auth("acme"))
        assert [m["role"] for m in transcript.json()["messages"]] == ["customer", "bot"]


async def test_limits_kept_in_redis_under_the_prefix(sqlite_url: str, data_dir: Path, redis_url: str,
                                                     redis_prefix: str) -> None:
    async with gateway(sqlite_url, data_dir, redis_url=redis_url, rate_limit_per_key="5/minute",
                       auth_failure_limit="5/minute") as gw, gw.client() as client:
        assert gw.app.state.limits.backend == "redis"
        await new_conversation(client, gw.auth("acme"))
        assert (await client.post("/v1/conversations", headers={"Authorization": "Bearer sb_wrong"})).status_code == 401
    client = redis_sync.Redis.from_url(redis_url, socket_timeout=5)
    ours = [key.decode() for key in client.keys(f"{redis_prefix}ratelimit:*")]
    assert any("requests-key" in key for key in ours) and any("auth-failures" in key for key in ours)
    # Nothing under the library's own prefixes, outside ours.
    assert not client.keys("LIMITS*") and not client.keys("LIMITER*")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_redis_down_falls_back_to_per_process_limits(sqlite_url: str, data_dir: Path, redis_url: str) -> None:
    target = httpx.URL(redis_url)
    proxy = ThreadedProxy(target.host, target.port or 6379)
    port = proxy.start()
    try:
        url = f"redis://127.0.0.1:{port}{target.path}"
        async with gateway(sqlite_url, data_dir, redis_url=url, rate_limit_per_key="6/minute") as gw, \
                gw.client() as client:
            conversation = await new_conversation(client, gw.auth("acme"))
            path = f"/v1/conversations/{conversation}/messages"
            assert (await client.get(path, headers=gw.auth("acme"))).status_code == 200  # 2 of 6 in Redis
            proxy.stop()
            warnings = Records()
            logging.getLogger("gateway.limits").addHandler(warnings)
            try:
                statuses = [(await client.get(path, headers=gw.auth("acme"))).status_code for _ in range(8)]
            finally:
                logging.getLogger("gateway.limits").removeHandler(warnings)
            # Served, never a 500 or 503: the in-process window starts empty, so 6 more are let in.
            assert statuses == [200] * 6 + [429] * 2
            assert gw.app.state.limits.backend == "memory"
            assert len(warnings.records) == 1 and "per replica" in warnings.records[0].getMessage()
            ready = await client.get("/readyz")
            assert ready.json()["status"] == "degraded" and "redis" in ready.json()["degraded"]

            proxy.start(port)  # Redis is back: its window (2 of 6) is used again
            redis = gw.app.state.redis
            for _ in range(100):
                if redis.up:
                    break
                await asyncio.sleep(0.05)
            assert redis.up
            statuses = [(await client.get(path, headers=gw.auth("acme"))).status_code for _ in range(5)]
            assert statuses == [200] * 4 + [429]
            assert gw.app.state.limits.backend == "redis"
    finally:
        proxy.close()


async def test_message_limit_in_the_openapi_schema(sqlite_url: str, data_dir: Path) -> None:
    async with gateway(sqlite_url, data_dir) as gw, gw.client() as client:
        schema = (await client.get("/openapi.json")).json()
        text = schema["components"]["schemas"]["NewMessage"]["properties"]["text"]
        assert text["maxLength"] == 4000 and text["minLength"] == 1
        assert "4,000" in text.get("description", "") or "4000" in text.get("description", "")
        responses = schema["paths"]["/v1/conversations/{conversation_id}/messages"]["post"]["responses"]
        assert {"413", "429", "431"} <= set(responses)


@pytest.mark.parametrize(("name", "value"), [("RATE_LIMIT_PER_KEY", "lots"), ("TOKEN_LIMIT_PER_TENANT", "0/minute"),
                                             ("AUTH_FAILURE_LIMIT", "20 per fortnight")])
def test_bad_limit_setting_is_refused_naming_it(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        GatewaySettings()
    monkeypatch.setenv(name, "off")
    assert getattr(GatewaySettings(), name.lower()) == "off"
