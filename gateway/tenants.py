"""Tenant set-up and API-key authentication; no FastAPI here."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import storage
from supportbot.db import is_outage, transaction
from supportbot.errors import Conflict, DatabaseUnavailable, Unauthorized

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


async def revoke_key(sessions: async_sessionmaker[AsyncSession], *, key: str) -> bool:
    """Revoke an API key; False when no active key matches. Gateways stop accepting it within their
    `AUTH_CACHE_FRESH_S` (they re-check a cached key against the database after that long)."""
    async with transaction(sessions) as session:
        revoked = await storage.revoke_key(session, key_hash=storage.hash_key(key))
    if revoked:
        log.info("api key revoked")
    return revoked


def bearer_key(authorization: str | None) -> str:
    """The API key of an `Authorization: Bearer <key>` header, or raise 401."""
    if not authorization:
        raise Unauthorized("missing Authorization header: send 'Authorization: Bearer <api key>'",
                           field="Authorization")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("Authorization header must be 'Bearer <api key>'", field="Authorization")
    return key.strip()


@dataclass
class _Confirmed:
    tenant_id: str
    at: float
    """When the database last said this key is valid (the clock's time)."""


class Authenticator:
    """API keys checked against the database, through an in-process cache of key hash → tenant.

    A key the database confirmed less than `fresh_s` ago is accepted without a query, so a revoked key stops
    working within `fresh_s`; an older one is checked again (concurrent checks of one key share one query).
    While the database cannot be reached, a key confirmed in the last `max_stale_s` is still accepted, so a
    short outage does not lock every customer out; any other key gets 503, not 401, since it may be valid.
    After a failed query the database is left alone for `outage_backoff_s` (requests do not each wait on
    it). Only SHA-256 hashes of keys are kept, and only of valid keys, at most `max_entries` of them.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, fresh_s: float, max_stale_s: float,
                 outage_backoff_s: float = 1.0, max_entries: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sessions = sessions
        self.fresh_s = fresh_s
        self.max_stale_s = max(max_stale_s, fresh_s)
        self.outage_backoff_s = outage_backoff_s
        self.max_entries = max_entries
        self._clock = clock
        self._confirmed: OrderedDict[str, _Confirmed] = OrderedDict()
        self._checks: dict[str, asyncio.Task[str | None]] = {}
        self._database_down_until = float("-inf")
        self._last_stale_warning = float("-inf")

    async def authenticate(self, authorization: str | None) -> str:
        """The tenant id for an `Authorization` header; 401 for a bad or unknown key, 503 when the database
        cannot tell and the key is not in the cache."""
        return await self.tenant_for(bearer_key(authorization))

    async def tenant_for(self, key: str) -> str:
        key_hash = storage.hash_key(key)
        now = self._clock()
        known = self._confirmed.get(key_hash)
        if known is not None and now - known.at < self.fresh_s:
            return known.tenant_id
        if now < self._database_down_until:
            return self._from_cache(known, now)
        try:
            tenant_id = await self._check(key_hash)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._database_down_until = self._clock() + self.outage_backoff_s
            return self._from_cache(known, now, exc)
        if tenant_id is None:
            self._confirmed.pop(key_hash, None)
            raise Unauthorized("invalid API key", field="Authorization")
        return tenant_id

    async def _check(self, key_hash: str) -> str | None:
        task = self._checks.get(key_hash)
        if task is None:
            task = asyncio.ensure_future(self._query(key_hash))
            self._checks[key_hash] = task
            task.add_done_callback(lambda done: self._checked(key_hash, done))
        # shielded: a caller that goes away does not cancel the query the others wait on
        return await asyncio.shield(task)

    def _checked(self, key_hash: str, task: asyncio.Task[str | None]) -> None:
        self._checks.pop(key_hash, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every caller may have gone before it failed

    async def _query(self, key_hash: str) -> str | None:
        async with self.sessions() as session:
            tenant_id = await storage.tenant_id_for_key_hash(session, key_hash=key_hash)
        self._database_down_until = float("-inf")
        if tenant_id is not None:
            self._confirmed[key_hash] = _Confirmed(tenant_id, self._clock())
            self._confirmed.move_to_end(key_hash)
            while len(self._confirmed) > self.max_entries:
                self._confirmed.popitem(last=False)
        return tenant_id

    def _from_cache(self, known: _Confirmed | None, now: float, cause: Exception | None = None) -> str:
        if known is not None and now - known.at < self.max_stale_s:
            if now - self._last_stale_warning >= 10.0:
                self._last_stale_warning = now
                log.warning("database unavailable, API keys accepted from the cache",
                            extra={"supportbot.auth_cache_keys": len(self._confirmed)})
            return known.tenant_id
        raise DatabaseUnavailable("the database is unavailable, so the API key cannot be checked; retry shortly"
                                  ) from cause
