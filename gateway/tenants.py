"""Tenants, their API keys (roles, origins, rotation, revocation) and API-key authentication; no FastAPI here.

Keys are shown once and stored as SHA-256 hashes. `Authenticator` turns a key into a `Principal`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway import storage
from gateway.access import Principal, Role
from supportbot.db import is_outage, transaction, utcnow
from supportbot.errors import Conflict, DatabaseUnavailable, NotFound, Unauthorized
from supportbot.tenancy import Tenant

log = logging.getLogger(__name__)

DEMO_TENANT = "demo"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
MAX_ORIGINS = 20
MAX_GRACE_S = 7 * 24 * 3600


def new_api_key() -> str:
    return "sb_" + secrets.token_urlsafe(32)


def new_conversation_token() -> str:
    """A widget conversation's token: shown once to the widget, kept only as its SHA-256."""
    return "sbc_" + secrets.token_urlsafe(32)


def normalize_origin(value: str) -> str:
    """An origin as browsers send it in `Origin`: `https://host[:port]` (or `http://` for localhost while
    developing), lower-case, without a default port, path, query, credentials or wildcard; else ValueError."""
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("https", "http"):
        raise ValueError(f"origin {value!r} must start with https:// (http:// only for localhost)")
    rest = rest[:-1] if rest.endswith("/") else rest
    if not rest or any(c in rest for c in "/?#@*\\ "):
        raise ValueError(f"origin {value!r} must be scheme://host[:port] only: no path, query, credentials or "
                         "wildcard (each site needs its own --origin)")
    host, port = rest.lower(), None
    if not host.endswith("]") and ":" in host:  # "[::1]" has colons of its own
        host, _, port = host.rpartition(":")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"origin {value!r} has no valid port")
    if not (_HOST.match(host) or host in _LOCAL_HOSTS):
        raise ValueError(f"origin {value!r} has no valid host name (write internationalised names in punycode, "
                         "xn--...)")
    if scheme == "http" and host not in _LOCAL_HOSTS:
        raise ValueError(f"origin {value!r}: widget pages must be served over https (http:// only for localhost)")
    if port is not None and int(port) == (443 if scheme == "https" else 80):
        port = None  # browsers leave the default port out of `Origin`
    return f"{scheme}://{host}" + (f":{int(port)}" if port is not None else "")


@dataclass(frozen=True)
class IssuedKey:
    """A key just made: `key` is shown this once and never stored."""

    key: str
    key_id: str
    tenant_id: str
    role: Role
    origins: tuple[str, ...] = ()


def _key_fields(role: Role | str, origins: Sequence[str]) -> tuple[Role, tuple[str, ...]]:
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(f"role must be one of {', '.join(r.value for r in Role)}, not {role!r}") from None
    normalized = tuple(dict.fromkeys(normalize_origin(origin) for origin in origins))
    if role is Role.WIDGET and not normalized:
        raise ValueError("a widget key needs at least one --origin: the sites (https://host[:port]) whose pages "
                         "may use it")
    if role is not Role.WIDGET and normalized:
        raise ValueError(f"only widget keys have origins; {role.value} keys are for server-side use")
    if len(normalized) > MAX_ORIGINS:
        raise ValueError(f"at most {MAX_ORIGINS} origins per key")
    return role, normalized


async def create_tenant_with_key(
    sessions: async_sessionmaker[AsyncSession], *, tenant_id: str, name: str | None = None,
    api_key: str | None = None, keep_originals: bool = False,
) -> IssuedKey:
    """Create a tenant with its first key, an admin key (shown once; only its hash is kept)."""
    if not _SLUG.match(tenant_id):
        raise ValueError("tenant id must be a lowercase slug: letters, digits and '-', at most 63 characters")
    key = api_key or new_api_key()
    try:
        async with transaction(sessions) as session:
            if await storage.get_tenant(session, tenant_id=tenant_id) is not None:
                raise Conflict(f"tenant {tenant_id!r} already exists", field="tenant_id")
            await storage.create_tenant(session, tenant_id=tenant_id, name=name or tenant_id,
                                        keep_originals=keep_originals)
            row = await storage.add_api_key(session, tenant_id=tenant_id, key=key, role=Role.ADMIN)
    except IntegrityError as exc:
        raise Conflict(f"tenant {tenant_id!r} or its key already exists", field="tenant_id") from exc
    log.info("tenant created", extra={"supportbot.tenant_id": tenant_id, "supportbot.key_id": row.key_id})
    return IssuedKey(key=key, key_id=row.key_id, tenant_id=tenant_id, role=Role.ADMIN)


async def create_tenant(
    sessions: async_sessionmaker[AsyncSession], *, tenant_id: str, name: str | None = None, api_key: str | None = None,
    keep_originals: bool = False,
) -> str:
    """Create a tenant with one admin key and return the key."""
    issued = await create_tenant_with_key(sessions, tenant_id=tenant_id, name=name, api_key=api_key,
                                          keep_originals=keep_originals)
    return issued.key


async def bootstrap_demo_tenant(sessions: async_sessionmaker[AsyncSession], *, api_key: str | None) -> str | None:
    """On first start (no tenants yet) create tenant `demo` with an admin key; return the key when one was made
    here."""
    async with sessions() as session:
        if await storage.count_tenants(session) > 0:
            return None
    try:
        key = await create_tenant(sessions, tenant_id=DEMO_TENANT, name="Demo", api_key=api_key)
    except Conflict:  # another replica bootstrapped at the same moment
        return None
    return None if api_key else key


async def list_tenants(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[Tenant, int]]:
    """Every tenant with its number of keys that are not revoked."""
    async with sessions() as session:
        return await storage.list_tenants(session)


async def _existing_tenant(session: AsyncSession, tenant_id: str) -> None:
    if await storage.get_tenant(session, tenant_id=tenant_id) is None:
        raise NotFound(f"unknown tenant {tenant_id!r}: create it with `supportbot tenants create {tenant_id}`",
                       field="tenant")


async def create_key(sessions: async_sessionmaker[AsyncSession], *, tenant_id: str, role: Role | str,
                     origins: Sequence[str] = ()) -> IssuedKey:
    """A new key of `role` for the tenant; widget keys need the origins (sites) whose pages may use them."""
    role, normalized = _key_fields(role, origins)
    async with transaction(sessions) as session:
        await _existing_tenant(session, tenant_id)
        key = new_api_key()
        row = await storage.add_api_key(session, tenant_id=tenant_id, key=key, role=role, origins=normalized)
    log.info("api key created", extra={"supportbot.tenant_id": tenant_id, "supportbot.key_id": row.key_id,
                                       "supportbot.role": role.value})
    return IssuedKey(key=key, key_id=row.key_id, tenant_id=tenant_id, role=role, origins=normalized)


async def list_keys(sessions: async_sessionmaker[AsyncSession], *, tenant_id: str) -> list[storage.ApiKey]:
    """The tenant's keys, revoked ones included, oldest first."""
    async with sessions() as session:
        await _existing_tenant(session, tenant_id)
        return await storage.list_keys(session, tenant_id=tenant_id)


async def _known_key(session: AsyncSession, key_id: str) -> storage.ApiKey:
    row = await storage.get_key(session, key_id=key_id)
    if row is None:
        raise NotFound(f"unknown key {key_id!r}: `supportbot keys list --tenant T` shows a tenant's key ids",
                       field="key_id")
    return row


async def revoke_key_id(sessions: async_sessionmaker[AsyncSession], *, key_id: str) -> bool:
    """Revoke the key now; False when it was revoked already. Every gateway refuses it within its
    `AUTH_CACHE_FRESH_S` (1 s by default)."""
    async with transaction(sessions) as session:
        row = await _known_key(session, key_id)
        revoked = await storage.revoke_key_id(session, key_id=key_id)
    if revoked:
        log.info("api key revoked", extra={"supportbot.tenant_id": row.tenant_id, "supportbot.key_id": key_id})
    return revoked


async def rotate_key(sessions: async_sessionmaker[AsyncSession], *, key_id: str, grace_s: float = 0.0) -> IssuedKey:
    """A new key with the old one's tenant, role and origins; the old one is revoked, from now or (so that
    deployed pages and clients can switch over) after `grace_s` seconds."""
    if not 0 <= grace_s <= MAX_GRACE_S:
        raise ValueError(f"the grace must be between 0 and {MAX_GRACE_S} seconds (7 days)")
    async with transaction(sessions) as session:
        old = await _known_key(session, key_id)
        if not await storage.revoke_key_id(session, key_id=key_id, at=utcnow() + timedelta(seconds=grace_s)):
            raise Conflict(f"key {key_id} is revoked already: create a new one with `supportbot keys create`",
                           field="key_id")
        key = new_api_key()
        origins = storage.key_origins(old)
        row = await storage.add_api_key(session, tenant_id=old.tenant_id, key=key, role=old.role, origins=origins)
    log.info("api key rotated", extra={"supportbot.tenant_id": old.tenant_id, "supportbot.key_id": key_id,
                                       "supportbot.new_key_id": row.key_id})
    return IssuedKey(key=key, key_id=row.key_id, tenant_id=old.tenant_id, role=Role(old.role), origins=origins)


async def revoke_key(sessions: async_sessionmaker[AsyncSession], *, key: str) -> bool:
    """Revoke the API key itself (not its id); False when no active key matches."""
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
    principal: Principal
    at: float
    """When the database last said this key is valid (the clock's time when that query began)."""
    ends: float = float("inf")
    """When a key revoked with a grace stops being valid (the clock's time)."""


class Authenticator:
    """API keys checked against the database, through an in-process cache of key hash → principal.

    A key the database confirmed less than `fresh_s` ago is accepted without a query, so a revoked key stops
    working within `fresh_s` on every replica; an older one is checked again (concurrent checks of one key share
    one query). While the database cannot be reached, a key confirmed in the last `max_stale_s` is still
    accepted, so a short outage does not lock every customer out; any other key gets 503, not 401, since it may
    be valid. After a failed query the database is left alone for `outage_backoff_s` (requests do not each wait
    on it). Only SHA-256 hashes of keys are kept, and only of valid keys, at most `max_entries` of them.

    Each key's `last_used_at` is written at most once per `last_used_every_s`, by a background task, never on a
    request's path; a write that fails is dropped (it is bookkeeping).
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, fresh_s: float, max_stale_s: float,
                 outage_backoff_s: float = 1.0, max_entries: int = 50_000, last_used_every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sessions = sessions
        self.fresh_s = fresh_s
        self.max_stale_s = max(max_stale_s, fresh_s)
        self.outage_backoff_s = outage_backoff_s
        self.max_entries = max_entries
        self.last_used_every_s = last_used_every_s
        self._clock = clock
        self._confirmed: OrderedDict[str, _Confirmed] = OrderedDict()
        self._checks: dict[str, asyncio.Task[_Confirmed | None]] = {}
        self._database_down_until = float("-inf")
        self._last_stale_warning = float("-inf")
        self._use_noted: OrderedDict[str, float] = OrderedDict()
        self._use_pending: dict[str, datetime] = {}
        self._use_writer: asyncio.Task[None] | None = None

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal for an `Authorization` header; 401 for a bad or unknown key, 503 when the database
        cannot tell and the key is not in the cache."""
        return await self.principal_for(bearer_key(authorization))

    async def principal_for(self, key: str) -> Principal:
        principal = await self._principal(storage.hash_key(key))
        self._note_use(principal.key_id)
        return principal

    async def _principal(self, key_hash: str) -> Principal:
        now = self._clock()
        known = self._confirmed.get(key_hash)
        if known is not None and now >= known.ends:
            self._confirmed.pop(key_hash, None)
            known = None
        if known is not None and now - known.at < self.fresh_s:
            return known.principal
        if now < self._database_down_until:
            return self._from_cache(known, now)
        try:
            confirmed = await self._check(key_hash)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._database_down_until = self._clock() + self.outage_backoff_s
            return self._from_cache(known, now, exc)
        if confirmed is None:
            self._confirmed.pop(key_hash, None)
            raise Unauthorized("invalid API key", field="Authorization")
        return confirmed.principal

    async def _check(self, key_hash: str) -> _Confirmed | None:
        task = self._checks.get(key_hash)
        if task is None:
            task = asyncio.ensure_future(self._query(key_hash))
            self._checks[key_hash] = task
            task.add_done_callback(lambda done: self._checked(key_hash, done))
        # shielded: a caller that goes away does not cancel the query the others wait on
        return await asyncio.shield(task)

    def _checked(self, key_hash: str, task: asyncio.Task[_Confirmed | None]) -> None:
        self._checks.pop(key_hash, None)
        if not task.cancelled():
            task.exception()  # retrieved here too: every caller may have gone before it failed

    async def _query(self, key_hash: str) -> _Confirmed | None:
        started = self._clock()  # the answer holds from when it was asked: a revocation after that is seen next
        async with self.sessions() as session:
            row = await storage.valid_key_by_hash(session, key_hash=key_hash)
        self._database_down_until = float("-inf")
        if row is None:
            return None
        principal = Principal(key_id=row.key_id, tenant_id=row.tenant_id, role=Role(row.role),
                              origins=storage.key_origins(row))
        ends = float("inf")
        if row.revoked_at is not None:  # a rotated key in its grace
            ends = started + (row.revoked_at - utcnow()).total_seconds()
        confirmed = _Confirmed(principal, started, ends)
        self._confirmed[key_hash] = confirmed
        self._confirmed.move_to_end(key_hash)
        while len(self._confirmed) > self.max_entries:
            self._confirmed.popitem(last=False)
        return confirmed

    def _from_cache(self, known: _Confirmed | None, now: float, cause: Exception | None = None) -> Principal:
        if known is not None and now - known.at < self.max_stale_s:
            if now - self._last_stale_warning >= 10.0:
                self._last_stale_warning = now
                log.warning("database unavailable, API keys accepted from the cache",
                            extra={"supportbot.auth_cache_keys": len(self._confirmed)})
            return known.principal
        raise DatabaseUnavailable("the database is unavailable, so the API key cannot be checked; retry shortly"
                                  ) from cause

    def _note_use(self, key_id: str) -> None:
        now = self._clock()
        noted = self._use_noted.get(key_id)
        if noted is not None and now - noted < self.last_used_every_s:
            return
        self._use_noted[key_id] = now
        self._use_noted.move_to_end(key_id)
        while len(self._use_noted) > self.max_entries:
            self._use_noted.popitem(last=False)
        self._use_pending[key_id] = utcnow()
        if self._use_writer is None or self._use_writer.done():
            self._use_writer = asyncio.ensure_future(self._write_use())

    async def _write_use(self) -> None:
        while self._use_pending:
            used, self._use_pending = self._use_pending, {}
            if self._clock() < self._database_down_until:
                continue  # the database is away: these uses go unrecorded rather than queue up
            try:
                async with transaction(self.sessions) as session:
                    await storage.record_last_use(session, used=used)
            except Exception as exc:  # bookkeeping only: whatever went wrong, no request may fail for it
                log.debug("last use of API keys not recorded", extra={"error.type": type(exc).__name__})

    def knows(self, key: str) -> bool:
        """Whether the database confirmed `key` in the last `max_stale_s` (from the cache alone): a client
        address throttled for failed authentications (gateway/limits.py) still gets in with such a key."""
        known = self._confirmed.get(storage.hash_key(key))
        now = self._clock()
        return known is not None and now < known.ends and now - known.at < self.max_stale_s

    async def flush(self) -> None:
        """Wait for the last-use writes under way (tests, shutdown)."""
        if self._use_writer is not None:
            await asyncio.shield(self._use_writer)

    async def aclose(self, timeout_s: float = 1.0) -> None:
        """Let the last-use writes under way finish for up to `timeout_s`, then drop them."""
        writer = self._use_writer
        if writer is None or writer.done():
            return
        try:
            await asyncio.wait_for(writer, timeout_s)
        except TimeoutError:
            pass


class WidgetOrigins:
    """The origins some valid widget key of any tenant lists, read at most every `fresh_s`.

    CORS preflights carry no key, so they are answered for these origins; each actual request is then held to
    its own key's origins. While the database is away the last set read is kept.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, fresh_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sessions = sessions
        self.fresh_s = fresh_s
        self._clock = clock
        self._origins: frozenset[str] | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def allows(self, origin: str) -> bool:
        """Whether a widget key lists `origin` (as browsers send it); 503 when that was never read yet and the
        database cannot be reached."""
        if self._origins is None or self._clock() - self._read_at >= self.fresh_s:
            await self._refresh()
        assert self._origins is not None
        return origin in self._origins

    async def _refresh(self) -> None:
        async with self._lock:
            if self._origins is not None and self._clock() - self._read_at < self.fresh_s:
                return  # another request refreshed it while this one waited
            started = self._clock()
            try:
                async with self.sessions() as session:
                    self._origins = frozenset(await storage.widget_origins(session))
            except Exception as exc:
                if not is_outage(exc):
                    raise
                if self._origins is None:
                    raise DatabaseUnavailable() from exc
                # the old set serves on; the database is tried again in a second, not on every preflight
                self._read_at = self._clock() - self.fresh_s + min(self.fresh_s, 1.0)
                return
            self._read_at = started
