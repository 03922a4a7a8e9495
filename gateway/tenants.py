"""Tenant set-up and API-key authentication; no FastAPI here."""

from __future__ import annotations

import logging
import re
import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import storage
from supportbot.db import transaction
from supportbot.errors import Conflict, Unauthorized

log = logging.getLogger(__name__)

DEMO_TENANT = "demo"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def new_api_key() -> str:
    return "sb_" + secrets.token_urlsafe(32)


async def create_tenant(
    sessions: async_sessionmaker[AsyncSession], *, tenant_id: str, name: str | None = None, api_key: str | None = None
) -> str:
    """Create a tenant with one API key and return the key (shown once; only its hash is kept)."""
    if not _SLUG.match(tenant_id):
        raise ValueError("tenant id must be a lowercase slug: letters, digits and '-', at most 63 characters")
    key = api_key or new_api_key()
    try:
        async with transaction(sessions) as session:
            if await storage.get_tenant(session, tenant_id=tenant_id) is not None:
                raise Conflict(f"tenant {tenant_id!r} already exists", field="tenant_id")
            await storage.create_tenant(session, tenant_id=tenant_id, name=name or tenant_id)
            await storage.add_api_key(session, tenant_id=tenant_id, key=key)
    except IntegrityError as exc:
        raise Conflict(f"tenant {tenant_id!r} or its key already exists", field="tenant_id") from exc
    log.info("tenant created", extra={"supportbot.tenant_id": tenant_id})
    return key


async def bootstrap_demo_tenant(sessions: async_sessionmaker[AsyncSession], *, api_key: str | None) -> str | None:
    """On first start (no tenants yet) create tenant `demo`; return its key when one was made here."""
    async with sessions() as session:
        if await storage.count_tenants(session) > 0:
            return None
    try:
        key = await create_tenant(sessions, tenant_id=DEMO_TENANT, name="Demo", api_key=api_key)
    except Conflict:  # another replica bootstrapped at the same moment
        return None
    return None if api_key else key


async def authenticate(sessions: async_sessionmaker[AsyncSession], authorization: str | None) -> str:
    """Return the tenant id for an `Authorization: Bearer <key>` header, or raise 401."""
    if not authorization:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <api key>'",
                           field="Authorization")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("Authorization header must be 'Bearer <api key>'", field="Authorization")
    async with sessions() as session:
        tenant_id = await storage.tenant_id_for_key(session, key=key.strip())
    if tenant_id is None:
        raise Unauthorized("invalid API key", field="Authorization")
    return tenant_id
