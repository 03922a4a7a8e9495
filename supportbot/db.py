"""SQLAlchemy 2 engines, sessions and Alembic migrations, shared by every service.

The same migrations run on SQLite (the embedded default) and PostgreSQL. Each service upgrades the schema
at start under a lock (a PostgreSQL advisory lock, or a file lock next to the SQLite file), so any number of
replicas can start at once. `is_outage` tells a database that cannot be reached now from a failed query, so
that callers answer 503 and retry, not 500.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_ADVISORY_LOCK_ID = 74_201_734
# A PostgreSQL that does not answer (a dropped route, not a refused port) fails a connection attempt after this
# instead of holding the request; a pool with every connection busy makes a request wait at most this long.
CONNECT_TIMEOUT_S = 5
POOL_TIMEOUT_S = 10.0
_DRIVER_MODULES = ("sqlalchemy", "psycopg", "aiosqlite", "sqlite3")
# SQLite reports a bad statement (say, a missing table) as an OperationalError too: that one is a bug, not an outage.
_SQLITE_QUERY_ERRORS = frozenset({"SQLITE_ERROR", "SQLITE_MISUSE", "SQLITE_RANGE", "SQLITE_MISMATCH",
                                  "SQLITE_CONSTRAINT", "SQLITE_SCHEMA", "SQLITE_TOOBIG"})


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


def _connect_args(url: str) -> dict[str, object]:
    """A connect timeout for PostgreSQL unless the URL names its own."""
    parsed = make_url(url)
    if parsed.drivername.startswith("postgresql") and "connect_timeout" not in parsed.query:
        return {"connect_timeout": CONNECT_TIMEOUT_S}
    return {}


def make_async_engine(url: str) -> AsyncEngine:
    """An asyncio engine for `url`; SQLite gets WAL and a busy timeout so four processes can share it.
    Errors never carry a statement's parameters (customer text) into a log."""
    _ensure_sqlite_dir(url)
    if make_url(url).drivername.startswith("sqlite"):
        engine = create_async_engine(async_url(url), poolclass=NullPool, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # pre-ping: a connection the server dropped (a restart, an outage) is replaced, not handed to a request.
    return create_async_engine(async_url(url), pool_pre_ping=True, pool_size=10, max_overflow=10,
                               pool_timeout=POOL_TIMEOUT_S, connect_args=_connect_args(url), hide_parameters=True)


def make_sync_engine(url: str) -> Engine:
    """A plain engine (migrations, the CLI); like the asyncio one, its errors carry no parameters."""
    _ensure_sqlite_dir(url)
    engine = create_engine(sync_url(url), poolclass=NullPool, connect_args=_connect_args(url), hide_parameters=True)
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


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be reached or cannot take work now (worth a retry later),
    rather than a bad query: a refused or dropped connection, a server shutting down, an exhausted pool, a
    locked or unopenable SQLite file, or an OSError the driver raised while connecting."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if not isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return False
        orig = exc.orig
        if isinstance(orig, sqlite3.Error):
            return getattr(orig, "sqlite_errorname", "") not in _SQLITE_QUERY_ERRORS
        return True
    if isinstance(exc, OSError):
        return _raised_by_driver(exc)
    return False


def _raised_by_driver(exc: BaseException) -> bool:
    traceback = exc.__traceback__
    while traceback is not None:
        module = str(traceback.tb_frame.f_globals.get("__name__", ""))
        if module.startswith(_DRIVER_MODULES):
            return True
        traceback = traceback.tb_next
    return False


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
