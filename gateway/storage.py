"""Tenants and their API keys (only SHA-256 hashes of keys are stored)."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime

from sqlalchemy import ColumnElement, ForeignKey, String, Text, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from supportbot.db import Base, UTCDateTime, utcnow
from supportbot.tenancy import Tenant


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    """The key's public id (`key_...`): what `keys list` shows and `keys revoke` takes."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16), default="api")
    origins: Mapped[str | None] = mapped_column(Text, nullable=True)
    """JSON list of the origins a widget key may be used from."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def key_origins(row: ApiKey) -> tuple[str, ...]:
    return tuple(json.loads(row.origins)) if row.origins else ()


async def get_tenant(session: AsyncSession, *, tenant_id: str) -> Tenant | None:
    return await session.get(Tenant, tenant_id)


async def count_tenants(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Tenant)) or 0)


async def list_tenants(session: AsyncSession) -> list[tuple[Tenant, int]]:
    """Every tenant, oldest first, with how many keys it has that are not revoked."""
    active = (select(ApiKey.tenant_id, func.count().label("keys")).where(ApiKey.revoked_at.is_(None))
              .group_by(ApiKey.tenant_id).subquery())
    rows = await session.execute(select(Tenant, func.coalesce(active.c["keys"], 0))
                                 .outerjoin(active, active.c.tenant_id == Tenant.id)
                                 .order_by(Tenant.created_at, Tenant.id))
    return [(tenant, int(keys)) for tenant, keys in rows]


async def create_tenant(session: AsyncSession, *, tenant_id: str, name: str, keep_originals: bool = False) -> Tenant:
    tenant = Tenant(id=tenant_id, name=name, created_at=utcnow(), keep_originals=keep_originals)
    session.add(tenant)
    await session.flush()
    return tenant


async def add_api_key(session: AsyncSession, *, tenant_id: str, key: str, role: str = "api",
                      origins: tuple[str, ...] = ()) -> ApiKey:
    row = ApiKey(key_id=new_key_id(), tenant_id=tenant_id, key_hash=hash_key(key), prefix=key[:10], role=role,
                 origins=json.dumps(list(origins)) if origins else None, created_at=utcnow())
    session.add(row)
    await session.flush()
    return row


async def get_key(session: AsyncSession, *, key_id: str) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))


async def list_keys(session: AsyncSession, *, tenant_id: str) -> list[ApiKey]:
    """The tenant's keys, revoked ones included, oldest first."""
    return list(await session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id)
                                      .order_by(ApiKey.created_at, ApiKey.id)))


def _valid(now: datetime) -> ColumnElement[bool]:
    """Not revoked, or revoked with a grace that has not ended yet."""
    return or_(ApiKey.revoked_at.is_(None), ApiKey.revoked_at > now)


async def valid_key_by_hash(session: AsyncSession, *, key_hash: str) -> ApiKey | None:
    """The key with this hash, unless it was revoked."""
    return await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash, _valid(utcnow())))


async def tenant_id_for_key(session: AsyncSession, *, key: str) -> str | None:
    row = await valid_key_by_hash(session, key_hash=hash_key(key))
    return row.tenant_id if row is not None else None


async def revoke_key(session: AsyncSession, *, key_hash: str) -> bool:
    """Mark the key with this hash revoked; False when there is no such key or it was revoked already."""
    result = await session.execute(
        update(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def revoke_key_id(session: AsyncSession, *, key_id: str, at: datetime | None = None) -> bool:
    """Revoke the key with this id from `at` (default now); False when it is revoked (or ending) already."""
    now = utcnow()
    result = await session.execute(
        update(ApiKey).where(ApiKey.key_id == key_id, _valid(now)).values(revoked_at=at or now))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def record_last_use(session: AsyncSession, *, used: dict[str, datetime]) -> None:
    """Set `last_used_at` of these keys (key id → when), never moving it back."""
    for key_id, at in used.items():
        await session.execute(update(ApiKey).where(
            ApiKey.key_id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < at)
        ).values(last_used_at=at))


async def widget_origins(session: AsyncSession) -> set[str]:
    """Every origin listed by a widget key that is still valid, of any tenant."""
    rows = await session.scalars(select(ApiKey.origins).where(ApiKey.role == "widget", _valid(utcnow()),
                                                              ApiKey.origins.is_not(None)))
    return {origin for text in rows for origin in json.loads(text)}
