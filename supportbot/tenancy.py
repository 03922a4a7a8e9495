"""Tenants: the table every service reads (the gateway creates them, dialogue and llm check them)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from sqlalchemy import Boolean, String, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from supportbot.db import Base, UTCDateTime, is_outage, utcnow
from supportbot.errors import DatabaseUnavailable, NotFound

TENANT_FRESH_S = 60.0
"""How long a tenant found in the table is believed without asking again."""
TENANT_MAX_STALE_S = 3600.0
"""While the database is down, a tenant found within this long still counts as existing."""


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    keep_originals: Mapped[bool] = mapped_column(Boolean, default=False)
    """Opt-in: keep each message's original text too, encrypted at rest, readable by admin keys only."""


class TenantDirectory:
    """Which tenants exist, for services that act on a tenant an internal caller names (dialogue, llm).

    Found tenants are cached for `fresh_s` (tenants are not deleted, so an old answer errs only by a minute);
    unknown ones are not, so a tenant created a moment ago is found at once and nobody can fill the cache with
    made-up names. While the database is down a tenant found within `max_stale_s` still exists; any other
    gets 503 `database_unavailable`. Concurrent lookups of one tenant share one query.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, fresh_s: float = TENANT_FRESH_S,
                 max_stale_s: float = TENANT_MAX_STALE_S) -> None:
        self.sessions = sessions
        self.fresh_s = fresh_s
        self.max_stale_s = max_stale_s
        self._found: dict[str, float] = {}  # tenant id -> monotonic time it was last found
        self._pending: dict[str, asyncio.Future[bool]] = {}

    async def require(self, tenant_id: str) -> None:
        """Return if tenant `tenant_id` exists; else 404 `tenant not found` naming `tenant_id`."""
        if not await self.exists(tenant_id):
            raise NotFound(f"tenant {tenant_id} not found", field="tenant_id")

    async def exists(self, tenant_id: str) -> bool:
        found = self._found.get(tenant_id)
        now = time.monotonic()
        if found is not None and now - found < self.fresh_s:
            return True
        pending = self._pending.get(tenant_id)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                return await self.exists(tenant_id)  # the request that asked first went away: ask again
        pending = self._pending[tenant_id] = asyncio.get_running_loop().create_future()
        try:
            exists = await self._look_up(tenant_id, found)
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except Exception as exc:
            pending.set_exception(exc)
            pending.exception()  # marked as retrieved: waiters re-raise it, nobody else need
            raise
        else:
            pending.set_result(exists)
        finally:
            del self._pending[tenant_id]
        return exists

    async def _look_up(self, tenant_id: str, found: float | None) -> bool:
        try:
            async with self.sessions() as session:
                exists = await session.scalar(select(Tenant.id).where(Tenant.id == tenant_id)) is not None
        except (SQLAlchemyError, OSError) as exc:
            if not is_outage(exc):
                raise
            if found is not None and time.monotonic() - found < self.max_stale_s:
                return True
            raise DatabaseUnavailable() from exc
        if exists:
            self._found[tenant_id] = time.monotonic()
        else:
            self._found.pop(tenant_id, None)
        return exists
