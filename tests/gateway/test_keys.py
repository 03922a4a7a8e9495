"""API keys: roles and origins, rotation, revocation seen by every gateway replica within a second, last use
written at most once a minute off the request path, and the bootstrap key's placeholders refused."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import ValidationError

from gateway.access import Role
from gateway.app import create_app as create_gateway
from gateway.storage import get_key
from gateway.tenants import (
    Authenticator,
    create_key,
    create_tenant_with_key,
    normalize_origin,
    revoke_key_id,
    rotate_key,
)
from services.dialogue.app import create_app as create_dialogue
from supportbot.db import open_database, session_factory
from supportbot.errors import Conflict, NotFound, Unauthorized
from supportbot.settings import DialogueSettings, GatewaySettings
from tests.helpers import REPO
from tests.stack import asgi, running

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("given", "stored"), [
    ("https://shop.example.com", "https://shop.example.com"),
    ("HTTPS://Shop.Example.COM/", "https://shop.example.com"),
    ("https://shop.example.com:443", "https://shop.example.com"),
    ("https://shop.example.com:8443", "https://shop.example.com:8443"),
    ("http://localhost:3000", "http://localhost:3000"),
    ("http://127.0.0.1", "http://127.0.0.1"),
    ("http://[::1]:8080", "http://[::1]:8080"),
    ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
])
def test_origins_are_stored_as_browsers_send_them(given: str, stored: str) -> None:
    assert normalize_origin(given) == stored


@pytest.mark.parametrize(("given", "why"), [
    ("shop.example.com", "must start with https://"),
    ("ftp://shop.example.com", "must start with https://"),
    ("http://shop.example.com", "served over https"),
    ("https://shop.example.com/widget", "no path"),
    ("https://shop.example.com?x=1", "no path"),
    ("https://user@shop.example.com", "credentials"),
    ("https://*.example.com", "wildcard"),
    ("*", "must start with https://"),
    ("null", "must start with https://"),
    ("https://", "scheme://host"),
    ("https://shop.example.com:0", "valid port"),
    ("https://shop.example.com:99999", "valid port"),
    ("https://bücher.example", "punycode"),
    ("https://-bad-.example", "valid host"),
])
def test_origins_that_are_not_one_site_are_refused(given: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        normalize_origin(given)


def test_the_bootstrap_key_of_the_example_secret_is_refused_with_how_to_make_one() -> None:
    documents = yaml.safe_load_all((REPO / "k8s" / "secret.example.yaml").read_text())
    example = next(d["stringData"] for d in documents if d and d.get("kind") == "Secret"
                   and "SUPPORTBOT_BOOTSTRAP_API_KEY" in d.get("stringData", {}))  # the gateway's, of several
    for placeholder in (example["SUPPORTBOT_BOOTSTRAP_API_KEY"], "changeme", "change-me", "CHANGE_ME_PLEASE_0123456789",
                        "your-secret-here-0123456789", "short-but-random-Zq"):
        with pytest.raises(ValidationError) as refused:
            GatewaySettings(bootstrap_api_key=placeholder)
        assert "openssl rand -hex 32" in str(refused.value)
        assert placeholder not in str(refused.value), "a secret, even a bad one, is not repeated in errors"
    real = "5f0c2b7e9d4a41c38e1b6a2f7d9c0e4b8a3f6d1c2e5b7a9f0d3c6e8b1a4f7d2c"
    assert GatewaySettings(bootstrap_api_key=real).bootstrap_api_key.get_secret_value() == real  # type: ignore[union-attr]


def test_keys_are_refused_by_every_replica_within_one_second_by_default() -> None:
    assert GatewaySettings().auth_cache_fresh_s == 1.0


async def test_roles_origins_rotation_and_revocation(sqlite_url: str) -> None:
    engine = open_database(sqlite_url)
    sessions = session_factory(engine)
    auth = Authenticator(sessions, fresh_s=0, max_stale_s=0)
    try:
        admin = await create_tenant_with_key(sessions, tenant_id="acme")
        assert admin.role is Role.ADMIN
        assert (await auth.principal_for(admin.key)).role is Role.ADMIN
        with pytest.raises(NotFound, match="unknown tenant 'nope'"):
            await create_key(sessions, tenant_id="nope", role="api")
        with pytest.raises(ValueError, match="needs at least one --origin"):
            await create_key(sessions, tenant_id="acme", role="widget")
        with pytest.raises(ValueError, match="only widget keys have origins"):
            await create_key(sessions, tenant_id="acme", role="api", origins=["https://shop.example.com"])
        with pytest.raises(ValueError, match="role must be one of"):
            await create_key(sessions, tenant_id="acme", role="root")

        widget = await create_key(sessions, tenant_id="acme", role="widget",
                                  origins=["https://shop.example.com/", "https://SHOP.example.com", "http://localhost:5173"])
        assert widget.origins == ("https://shop.example.com", "http://localhost:5173")
        principal = await auth.principal_for(widget.key)
        assert (principal.key_id, principal.tenant_id, principal.role, principal.origins) == (
            widget.key_id, "acme", Role.WIDGET, widget.origins)
        async with sessions() as session:
            row = await get_key(session, key_id=widget.key_id)
        assert row is not None and widget.key not in (row.key_hash, row.prefix) and len(row.key_hash) == 64

        rotated = await rotate_key(sessions, key_id=widget.key_id)
        assert (rotated.role, rotated.origins, rotated.tenant_id) == (Role.WIDGET, widget.origins, "acme")
        assert rotated.key != widget.key and rotated.key_id != widget.key_id
        with pytest.raises(Unauthorized):
            await auth.principal_for(widget.key)
        assert (await auth.principal_for(rotated.key)).origins == widget.origins
        with pytest.raises(Conflict, match="revoked already"):
            await rotate_key(sessions, key_id=widget.key_id)
        with pytest.raises(NotFound, match="unknown key"):
            await rotate_key(sessions, key_id="key_0000000000000000")
        with pytest.raises(ValueError, match="grace"):
            await rotate_key(sessions, key_id=rotated.key_id, grace_s=8 * 24 * 3600)

        # With a grace the old key keeps working until it ends, then is refused, by a long cache too.
        graced = await rotate_key(sessions, key_id=rotated.key_id, grace_s=0.8)
        cached = Authenticator(sessions, fresh_s=60, max_stale_s=900)
        assert (await cached.principal_for(rotated.key)).key_id == rotated.key_id
        assert (await auth.principal_for(rotated.key)).key_id == rotated.key_id
        assert (await auth.principal_for(graced.key)).key_id == graced.key_id
        await asyncio.sleep(0.9)
        for each in (auth, cached):
            with pytest.raises(Unauthorized):
                await each.principal_for(rotated.key)

        assert await revoke_key_id(sessions, key_id=graced.key_id) is True
        assert await revoke_key_id(sessions, key_id=graced.key_id) is False
        with pytest.raises(NotFound, match="unknown key"):
            await revoke_key_id(sessions, key_id="key_0000000000000000")
        with pytest.raises(Unauthorized):
            await auth.principal_for(graced.key)
        await cached.aclose()
    finally:
        await auth.aclose()
        await engine.dispose()


@asynccontextmanager
async def two_gateways(database_url: str, data_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """Two gateway replicas (each with its own key cache, default settings) on one database and one dialogue."""
    dialogue = create_dialogue(DialogueSettings(database_url=database_url, data_dir=data_dir))
    gateways = [create_gateway(GatewaySettings(database_url=database_url, data_dir=data_dir),
                               transports={"dialogue": asgi(dialogue)}) for _ in range(2)]
    async with AsyncExitStack() as stack:
        for app in (dialogue, *gateways):
            await stack.enter_async_context(running(app))
        clients = []
        for app in gateways:
            client = httpx.AsyncClient(transport=asgi(app), base_url="http://gateway")
            stack.push_async_callback(client.aclose)
            clients.append(client)
        yield tuple(clients)


async def test_a_revoked_key_is_refused_by_both_replicas_within_one_second(database_url: str, data_dir: Path) -> None:
    async with two_gateways(database_url, data_dir) as (first, second):
        engine = open_database(database_url)
        stack_sessions = session_factory(engine)
        issued = await create_tenant_with_key(stack_sessions, tenant_id="acme")
        headers = {"Authorization": f"Bearer {issued.key}"}
        for client in (first, second):  # both replicas have the key in their caches
            assert (await client.post("/v1/conversations", headers=headers)).status_code == 201

        answers: list[tuple[int, float, int]] = []
        stop = asyncio.Event()

        async def keep_calling(replica: int, client: httpx.AsyncClient) -> None:
            while not stop.is_set():
                started = time.monotonic()
                response = await client.get("/v1/conversations/no-such-conversation/messages", headers=headers)
                answers.append((replica, started, response.status_code))
                await asyncio.sleep(0.01)

        callers = [asyncio.create_task(keep_calling(i, c)) for i, c in enumerate((first, second))]
        await asyncio.sleep(0.3)
        assert await revoke_key_id(stack_sessions, key_id=issued.key_id)
        revoked = time.monotonic()
        await asyncio.sleep(1.4)
        stop.set()
        await asyncio.gather(*callers)
        await engine.dispose()

    for replica in (0, 1):
        before = [status for r, at, status in answers if r == replica and at < revoked - 0.05]
        after = [status for r, at, status in answers if r == replica and at >= revoked + 1.0]
        assert before and set(before) == {404}, "accepted (the conversation does not exist) until the revocation"
        assert after and set(after) <= {401, 429}, f"replica {replica} accepted the key a second after: {after}"
        refusals = [status for r, at, status in answers if r == replica and at >= revoked and status != 404]
        # 401, then 429 once the replica throttles the client's failed authentications (AUTH_FAILURE_LIMIT)
        assert refusals[0] == 401 and set(refusals) <= {401, 429}
    assert {status for _, _, status in answers} <= {401, 404, 429}


async def test_last_use_is_written_at_most_once_a_minute_and_never_on_the_request_path(
        sqlite_url: str, tmp_path: Path) -> None:
    engine = open_database(sqlite_url)
    sessions = session_factory(engine)
    now = [1000.0]
    auth = Authenticator(sessions, fresh_s=5, max_stale_s=900, clock=lambda: now[0])
    try:
        issued = await create_tenant_with_key(sessions, tenant_id="acme")

        async def last_used() -> object:
            async with sessions() as session:
                row = await get_key(session, key_id=issued.key_id)
            assert row is not None
            return row.last_used_at

        # A writer holds the database: the request is answered all the same, its last-use write waits.
        blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=1)
        blocker.execute("BEGIN IMMEDIATE")
        principal = await asyncio.wait_for(auth.principal_for(issued.key), 3)
        assert principal.key_id == issued.key_id
        assert await last_used() is None
        blocker.rollback()
        blocker.close()
        await auth.flush()
        first = await last_used()
        assert first is not None

        for _ in range(50):
            now[0] += 1
            await auth.principal_for(issued.key)
        await auth.flush()
        assert await last_used() == first, "at most one write a minute per key"

        now[0] += 11
        await auth.principal_for(issued.key)
        await auth.flush()
        later = await last_used()
        assert later is not None and later > first  # type: ignore[operator]
    finally:
        await auth.aclose()
        await engine.dispose()
