"""Tenants and their API keys (only SHA-256 hashes of keys are stored)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, func, select, update
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


async def get_tenant(session: AsyncSession, *, tenant_id: str) -> Tenant | None:
    return await session.get(Tenant, tenant_id)


async def count_tenants(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(Tenant)) or 0)


async def create_tenant(session: AsyncSession, *, tenant_id: str, name: str) -> Tenant:
    tenant = Tenant(id=tenant_id, name=name, created_at=utcnow())
    session.add(tenant)
    await session.flush()
    return tenant


async def add_api_key(session: AsyncSession, *, tenant_id: str, key: str) -> ApiKey:
    row = ApiKey(key_id="key_" + secrets.token_hex(8), tenant_id=tenant_id, key_hash=hash_key(key), prefix=key[:10],
                 created_at=utcnow())
    session.add(row)
    await session.flush()
    return row


async def tenant_id_for_key(session: AsyncSession, *, key: str) -> str | None:
    return await tenant_id_for_key_hash(session, key_hash=hash_key(key))


async def tenant_id_for_key_hash(session: AsyncSession, *, key_hash: str) -> str | None:
    """The tenant of the key with this hash, unless it was revoked."""
    return await session.scalar(
        select(ApiKey.tenant_id).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )


async def revoke_key(session: AsyncSession, *, key_hash: str) -> bool:
    """Mark the key with this hash revoked; False when there is no such key or it was revoked already."""
    result = await session.execute(
        update(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
