"""The gateway's cache of API-key hashes, on a real PostgreSQL that goes away (a proxy in front of it) and a
clock the test moves: fresh entries need no query, stale ones carry a database outage, unknown keys get 503."""

from __future__ import annotations

import pytest

from gateway.tenants import Authenticator, revoke_key
from supportbot.db import make_async_engine, session_factory
from supportbot.errors import DatabaseUnavailable, Unauthorized
from tests.helpers import create_tenants
from tests.outages.support import ThreadedProxy

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_fresh_stale_and_unknown_keys_through_a_database_outage(
        proxied_postgres: tuple[ThreadedProxy, str]) -> None:
    proxy, url = proxied_postgres
    keys = await create_tenants(url, "acme", "globex")
    engine = make_async_engine(url)
    clock = Clock()
    auth = Authenticator(session_factory(engine), fresh_s=5, max_stale_s=900, clock=clock)
    try:
        assert (await auth.authenticate(f"Bearer {keys['acme']}")).tenant_id == "acme"
        assert keys["acme"] not in repr(auth._confirmed), "only hashes are kept"
        with pytest.raises(Unauthorized):
            await auth.authenticate("Bearer sb_never_issued_0123456789")

        proxy.stop()  # the database goes away
        clock.now += 1
        assert (await auth.authenticate(f"Bearer {keys['acme']}")).tenant_id == "acme"  # fresh: no query at all
        clock.now += 10
        assert (await auth.authenticate(f"Bearer {keys['acme']}")).tenant_id == "acme"  # stale: the check fails, the cache serves
        for unknown in (keys["globex"], "sb_never_issued_0123456789"):  # valid or not, nothing can tell now
            with pytest.raises(DatabaseUnavailable) as refused:
                await auth.authenticate(f"Bearer {unknown}")
            assert refused.value.status_code == 503 and refused.value.retry_after_s
        clock.now += 900
        with pytest.raises(DatabaseUnavailable):  # confirmed too long ago to be trusted any more
            await auth.authenticate(f"Bearer {keys['acme']}")

        proxy.start(proxy.port)  # it comes back
        clock.now += 2  # past the short pause after a failed query
        assert (await auth.authenticate(f"Bearer {keys['acme']}")).tenant_id == "acme"
        assert (await auth.authenticate(f"Bearer {keys['globex']}")).tenant_id == "globex"
        with pytest.raises(Unauthorized):
            await auth.authenticate("Bearer sb_never_issued_0123456789")

        assert await revoke_key(session_factory(engine), key=keys["acme"]) is True
        assert await revoke_key(session_factory(engine), key=keys["acme"]) is False  # once is enough
        clock.now += 1
        assert (await auth.authenticate(f"Bearer {keys['acme']}")).tenant_id == "acme"  # still fresh in the cache
        clock.now += 5
        with pytest.raises(Unauthorized):  # re-checked: revoked
            await auth.authenticate(f"Bearer {keys['acme']}")
        proxy.stop()
        clock.now += 10
        with pytest.raises(DatabaseUnavailable):  # and a revoked key is not served from the cache in an outage
            await auth.authenticate(f"Bearer {keys['acme']}")
    finally:
        await auth.aclose()
        await engine.dispose()


async def test_malformed_headers_are_401_whatever_the_database(proxied_postgres: tuple[ThreadedProxy, str]) -> None:
    proxy, url = proxied_postgres
    await create_tenants(url, "acme")
    engine = make_async_engine(url)
    auth = Authenticator(session_factory(engine), fresh_s=5, max_stale_s=900)
    proxy.stop()
    try:
        for header in (None, "", "Basic Zm9vOmJhcg==", "Bearer ", "Bearer"):
            with pytest.raises(Unauthorized) as refused:
                await auth.authenticate(header)
            assert refused.value.field == "Authorization"
    finally:
        await engine.dispose()
