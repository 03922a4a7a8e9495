"""SQLAlchemy 2 engines, sessions and Alembic migrations, shared by every service.

The same migrations run on SQLite (the embedded default) and PostgreSQL. Each service upgrades the schema
at start under a lock (a PostgreSQL advisory lock, or a file lock next to the SQLite file), so any number of
replicas can start at once.
"""

from __future__ import annotations

import fcntl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_ADVISORY_LOCK_ID = 74_201_734


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base for every service's tables."""


def sync_url(url: str) -> str:
    """The driver Alembic uses for `url`."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    return url


def async_url(url: str) -> str:
    """The asyncio driver for `url` (aiosqlite for SQLite; psycopg 3 serves both modes)."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return url


def _ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: object, _: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_async_engine(url: str) -> AsyncEngine:
    """An asyncio engine for `url`; SQLite gets WAL and a busy timeout so four processes can share it."""
    _ensure_sqlite_dir(url)
    if make_url(url).drivername.startswith("sqlite"):
        engine = create_async_engine(async_url(url), poolclass=NullPool)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(async_url(url), pool_pre_ping=True, pool_size=10, max_overflow=10)


def make_sync_engine(url: str) -> Engine:
    _ensure_sqlite_dir(url)
    engine = create_engine(sync_url(url), poolclass=NullPool)
    if make_url(url).drivername.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work commits on success and rolls back on error."""
    async with sessions() as session, session.begin():
        yield session


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return config


@contextmanager
def _migration_lock(engine: Engine, url: str) -> Iterator[None]:
    parsed = make_url(url)
    if parsed.drivername.startswith("postgresql"):
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _ADVISORY_LOCK_ID})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _ADVISORY_LOCK_ID})
                conn.commit()
    elif parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        with open(f"{parsed.database}.migrate.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


def upgrade_database(url: str) -> None:
    """Bring the schema at `url` to the newest migration (safe to call from many processes at once)."""
    engine = make_sync_engine(url)
    try:
        with _migration_lock(engine, url), engine.begin() as connection:
            config = alembic_config(url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def open_database(url: str) -> AsyncEngine:
    """Migrate the schema at `url` to the newest revision, then return an asyncio engine for it."""
    upgrade_database(url)
    return make_async_engine(url)
