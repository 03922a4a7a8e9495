"""Personal data is never at rest in clear and never in a log: a conversation with an e-mail address, a phone
number and a card number through the whole stack, the database failing twice in the middle of it (a statement
that fails, answered 500 by dialogue with a stack trace in its log; then the connection cut, 503).

What is looked at: everything the four services wrote (stdout and stderr, as the ECS formatter writes it),
every row of every table read directly, every Redis key of the test, and the transcript through the API.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.tenants import create_key, create_tenant_with_key
from supportbot.crypto import TranscriptCipher
from supportbot.db import make_sync_engine, open_database, session_factory
from tests.outages.support import ThreadedProxy
from tests.stack import in_process_stack

pytestmark = pytest.mark.anyio

EMAIL = "maria.gonzalez84@correo-mail.es"
PHONE = "+34 612 48 93 07"
CARD = "4539 1488 0343 6467"
LEAKS = (EMAIL, "maria.gonzalez84", PHONE, "612 48 93 07", "612489307", CARD, "4539148803436467", "0343 6467")
"""The three values in every form a log or a row might hold them."""

# The tenant's own flow: its reply repeats what the customer typed, as real templates do.
FLOWS = """
flows:
  update_contact:
    intents: [update_account, change_address]
    slots:
      - name: email
        entity: email
        prompt: {en: "Of course. Which e-mail address should we use from now on?"}
        reprompt: {en: "Sorry, I didn't catch an e-mail address there. Could you type it again?"}
      - name: phone
        entity: phone
        prompt: {en: "Thanks! And a phone number we can reach you on?"}
        reprompt: {en: "That doesn't look like a phone number. Could you type it again?"}
    reply: template
    template: {en: "All set: we'll write to {email} from now on and call {phone} if we need to."}
"""

REFUSE_MESSAGES = """
CREATE FUNCTION refuse_messages() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'messages refused for now: %%', NEW.text; END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_messages BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse_messages();
"""


def assert_no_leak(where: str, content: str) -> None:
    found = [value for value in LEAKS if value in content]
    assert not found, f"{found} in {where}"


async def redis_contents(url: str, prefix: str) -> dict[str, str]:
    """Every key under `prefix` with its value as text, whatever the key's type."""
    client = Redis.from_url(url)
    contents: dict[str, str] = {}
    try:
        async for raw_key in client.scan_iter(match=f"{prefix}*"):
            key = raw_key.decode()
            kind = (await client.type(raw_key)).decode()
            value: Any
            if kind == "string":
                value = await client.get(raw_key)
            elif kind == "hash":
                value = await client.hgetall(raw_key)
            elif kind == "set":
                value = await client.smembers(raw_key)
            elif kind == "zset":
                value = await client.zrange(raw_key, 0, -1, withscores=True)
            elif kind == "list":
                value = await client.lrange(raw_key, 0, -1)
            elif kind == "stream":
                value = await client.xrange(raw_key)
            else:
                value = kind
            contents[key] = repr(value)
    finally:
        await client.aclose()
    return contents


def every_row(postgres_url: str) -> dict[str, list[str]]:
    """Each table of the test's schema with its rows as JSON."""
    schema = make_url(postgres_url).query["application_name"]
    engine = make_sync_engine(postgres_url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                                  {"s": schema}).scalars().all()
            return {table: list(conn.execute(text(f'SELECT row_to_json(t)::text FROM "{table}" t')).scalars())
                    for table in tables}
    finally:
        engine.dispose()


async def test_a_conversation_with_an_email_a_phone_and_a_card_leaves_them_nowhere(
        proxied_postgres: tuple[ThreadedProxy, str], postgres_url: str, data_dir: Path, model_cache_dir: Path,
        redis_url: str, redis_prefix: str, capfd: pytest.CaptureFixture[str]) -> None:
    proxy, url = proxied_postgres
    transcript_key = Fernet.generate_key().decode()
    engine = open_database(url)
    try:
        sessions = session_factory(engine)
        admin = (await create_tenant_with_key(sessions, tenant_id="acme", keep_originals=True)).key
        server = (await create_key(sessions, tenant_id="acme", role="api")).key
        agent = (await create_key(sessions, tenant_id="acme", role="agent")).key
        other_admin = (await create_tenant_with_key(sessions, tenant_id="bolt")).key  # keeps no originals
    finally:
        await engine.dispose()
    (data_dir / "tenants" / "acme").mkdir(parents=True)
    (data_dir / "tenants" / "acme" / "flows.yaml").write_text(FLOWS)
    statements = make_sync_engine(postgres_url)  # straight to PostgreSQL, past the proxy

    async with in_process_stack(database_url=url, data_dir=data_dir, model_dir=model_cache_dir,
                                redis_url=redis_url, dialogue_settings={"transcript_keys": transcript_key}) as stack:
        client = stack.client

        def as_key(key: str, **headers: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {key}", **headers}

        async def say(conversation_id: str, words: str, key: str = server, **headers: str) -> httpx.Response:
            return await client.post(f"/v1/conversations/{conversation_id}/messages", json={"text": words},
                                     headers=as_key(key, **headers))

        created = await client.post("/v1/conversations", headers=as_key(server))
        assert created.status_code == 201, created.text
        conversation = created.json()["id"]

        start = await say(conversation, "Hi there, I'd like to update the contact details on my account please")
        assert start.status_code == 200 and start.json()["flow"] == "update_contact", start.text
        email_turn = await say(conversation, f"sure, it's {EMAIL} (the old one doesn't work anymore)")
        assert email_turn.status_code == 200 and "phone" in email_turn.json()["reply"]["text"], email_turn.text

        # The database refuses the next statement: dialogue answers 500 and logs the stack trace.
        with statements.begin() as conn:
            conn.exec_driver_sql(REFUSE_MESSAGES)
        phone_words = f"yes of course, my mobile is {PHONE}, evenings are best"
        refused = await say(conversation, phone_words, **{"Idempotency-Key": "msg-3"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["service"] == "dialogue"
        with statements.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse_messages ON messages")
        done = await say(conversation, phone_words, **{"Idempotency-Key": "msg-3"})
        assert done.status_code == 200, done.text
        live_reply = done.json()["reply"]["text"]
        assert EMAIL in live_reply and PHONE in live_reply  # the customer sees the flow's answer as it is

        # The connection to the database is cut.
        proxy.stop()
        card_words = f"Also my last payment didn't go through, I paid with the card {CARD}. Can you check why?"
        cut = await say(conversation, card_words, **{"Idempotency-Key": "msg-4"})
        assert cut.status_code == 503 and cut.headers["Retry-After"], cut.text
        proxy.start(proxy.port)
        for _ in range(50):
            answered = await say(conversation, card_words, **{"Idempotency-Key": "msg-4"})
            if answered.status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert answered.status_code == 200, answered.text

        # The same key again: the same text is a retry (replayed from storage), another text a mistake (409).
        replayed = await say(conversation, card_words, **{"Idempotency-Key": "msg-4"})
        assert replayed.status_code == 200 and replayed.json()["duplicate"] is True, replayed.text
        reused = await say(conversation, "Can I pay by bank transfer instead?", **{"Idempotency-Key": "msg-4"})
        assert reused.status_code == 409, reused.text
        assert reused.json()["error"]["field"] == "Idempotency-Key"
        reused_id = await client.post(f"/v1/conversations/{conversation}/messages", headers=as_key(server),
                                      json={"text": "Can I pay by bank transfer?", "client_message_id": "msg-4"})
        assert reused_id.status_code == 409 and reused_id.json()["error"]["field"] == "client_message_id"

        # A tenant that keeps no originals: redacted text only, for its admin too.
        other = (await client.post("/v1/conversations", headers=as_key(other_admin))).json()["id"]
        assert (await say(other, f"please send the invoice to {EMAIL} instead", key=other_admin)).status_code == 200

        # Through the API: placeholders; originals only for the admin key, decrypted.
        transcript = await client.get(f"/v1/conversations/{conversation}/messages", headers=as_key(server))
        assert transcript.status_code == 200
        messages = transcript.json()["messages"]
        assert_no_leak("the transcript", transcript.text)
        texts = [m["text"] for m in messages]
        assert "sure, it's [EMAIL] (the old one doesn't work anymore)" in texts
        assert "yes of course, my mobile is [PHONE], evenings are best" in texts
        assert any("I paid with the card [CARD]." in t for t in texts)
        assert "All set: we'll write to [EMAIL] from now on and call [PHONE] if we need to." in texts
        assert all(m["original"] is None for m in messages)
        for not_admin in (server, agent):
            denied = await client.get(f"/v1/conversations/{conversation}/messages", params={"originals": "true"},
                                      headers=as_key(not_admin))
            assert denied.status_code == 403 and denied.json()["error"]["field"] == "originals", denied.text
        originals = await client.get(f"/v1/conversations/{conversation}/messages", params={"originals": "true"},
                                     headers=as_key(admin))
        assert originals.status_code == 200, originals.text
        kept = {m["original"] for m in originals.json()["messages"]} - {None}
        assert kept == {f"sure, it's {EMAIL} (the old one doesn't work anymore)", phone_words, card_words,
                        live_reply}
        others = await client.get(f"/v1/conversations/{other}/messages", params={"originals": "true"},
                                  headers=as_key(other_admin))
        assert [m["original"] for m in others.json()["messages"]] == [None, None]
        assert "[EMAIL]" in others.json()["messages"][0]["text"]

        stored_redis = await redis_contents(redis_url, redis_prefix)
        assert any(":dialogue:state:" in key for key in stored_redis)

    statements.dispose()
    # The database, read directly: placeholders, and the originals as ciphertext only.
    rows = every_row(postgres_url)
    for table, table_rows in rows.items():
        assert_no_leak(f"table {table}", "\n".join(table_rows))
    messages_rows = [json.loads(row) for row in rows["messages"]]
    ciphertexts = [row["original_encrypted"] for row in messages_rows if row["original_encrypted"]]
    assert len(ciphertexts) == 4
    cipher = TranscriptCipher([transcript_key])
    assert {cipher.decrypt(token) for token in ciphertexts} == kept
    for key, value in stored_redis.items():
        assert_no_leak(f"Redis key {key}", value)

    # Every service's output: not one of the values, although a stack trace of the refused statement is there.
    out, err = capfd.readouterr()
    assert_no_leak("the services' output", out + err)
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    traces = [line for line in lines if "messages refused for now" in line.get("error", {}).get("stack_trace", "")]
    assert traces, "the refused statement's stack trace should be in the log"
    assert "[PHONE]" in traces[0]["error"]["stack_trace"]  # the driver's message quoted the stored text
    assert any(line.get("message") == "database unavailable, answering 503" for line in lines)


async def test_a_tenant_that_keeps_originals_without_a_key_gets_redacted_text_and_one_warning(
        sqlite_url: str, data_dir: Path, model_cache_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    engine = open_database(sqlite_url)
    try:
        admin = (await create_tenant_with_key(session_factory(engine), tenant_id="acme", keep_originals=True)).key
    finally:
        await engine.dispose()
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        auth = {"Authorization": f"Bearer {admin}"}
        conversation = (await stack.client.post("/v1/conversations", headers=auth)).json()["id"]
        for words in (f"my email is {EMAIL}", f"or call {PHONE}"):
            sent = await stack.client.post(f"/v1/conversations/{conversation}/messages", headers=auth,
                                           json={"text": words})
            assert sent.status_code == 200, sent.text
        transcript = await stack.client.get(f"/v1/conversations/{conversation}/messages", headers=auth,
                                            params={"originals": "true"})
    messages = transcript.json()["messages"]
    assert [m["text"] for m in messages if m["role"] == "customer"] == ["my email is [EMAIL]", "or call [PHONE]"]
    assert all(m["original"] is None for m in messages)
    out, err = capfd.readouterr()
    assert_no_leak("the services' output", out + err)
    warnings = [line for line in out.splitlines() if "TRANSCRIPT_KEYS is unset" in line]
    assert len(warnings) == 1, warnings
