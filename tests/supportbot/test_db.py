from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, text

from services.dialogue import storage
from supportbot.db import make_async_engine, make_sync_engine, session_factory, transaction, upgrade_database


def test_migrations_create_every_table_and_are_idempotent(database_url: str) -> None:
    upgrade_database(database_url)
    upgrade_database(database_url)
    engine = make_sync_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"tenants", "api_keys", "conversations", "messages", "usage_events", "alembic_version"} <= tables


def test_concurrent_upgrades_do_not_collide(database_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: upgrade_database(database_url), range(4)))


@pytest.mark.anyio
async def test_timestamps_come_back_timezone_aware(database_url: str) -> None:
    upgrade_database(database_url)
    engine = make_async_engine(database_url)
    try:
        sessions = session_factory(engine)
        async with transaction(sessions) as session:
            row = await storage.create_conversation(session, tenant_id="demo", channel="web")
        async with sessions() as session:
            loaded = await storage.get_conversation(session, tenant_id="demo", conversation_id=row.id)
        assert loaded is not None
        assert loaded.created_at.tzinfo is not None
        assert abs((datetime.now(UTC) - loaded.created_at).total_seconds()) < 60
        async with sessions() as session:
            assert await storage.get_conversation(session, tenant_id="other", conversation_id=row.id) is None
    finally:
        await engine.dispose()


@pytest.mark.anyio
async def test_statement_errors_carry_no_parameters(database_url: str) -> None:
    """A failing statement's error (what a 500's stack trace would show) holds the SQL, never the values."""
    value = "my card is 4111 1111 1111 1111"
    engine = make_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(sa_exc.DBAPIError) as failed:
                await conn.execute(text("SELECT * FROM no_such_table WHERE note = :note"), {"note": value})
    finally:
        await engine.dispose()
    sync_engine = make_sync_engine(database_url)
    try:
        with sync_engine.connect() as conn, pytest.raises(sa_exc.DBAPIError) as failed_sync:
            conn.execute(text("SELECT * FROM no_such_table WHERE note = :note"), {"note": value})
    finally:
        sync_engine.dispose()
    for error in (failed.value, failed_sync.value):
        assert value not in str(error) and "parameters hidden" in str(error)
