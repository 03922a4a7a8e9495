"""Rate limits at the gateway, with the `limits` package; no FastAPI here.

- Requests per key and per tenant (`RATE_LIMIT_PER_KEY`, `RATE_LIMIT_PER_TENANT`): moving window, so the
  requests accepted in any window of the limit's length never exceed it, on all replicas together (each
  acquisition is one atomic Lua script in Redis).
- LLM tokens per key and per tenant (`TOKEN_LIMIT_PER_KEY`, `TOKEN_LIMIT_PER_TENANT`): a turn's tokens are
  known only after it, so they are charged then (fixed window, a counter per window) and a new turn is
  refused once the window's tokens are spent; the turn that crosses the line is finished, not cut off.
- Failed authentications per client address (`AUTH_FAILURE_LIMIT`): see `Limits.auth_throttled`.

Shared by every replica through Redis (keys under `REDIS_KEY_PREFIX` + `ratelimit:`); without `REDIS_URL`
in process. While Redis does not answer, each replica falls back to its own in-process counters (one
warning per outage): the gateway keeps serving, and a limit then holds per replica, so N replicas may
together accept up to N times it until Redis is back.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from gateway.access import Principal
from supportbot.cache import REDIS_ERRORS, SharedRedis
from supportbot.errors import RateLimited, Unauthorized
from supportbot.settings import GatewaySettings

log = logging.getLogger(__name__)

T = TypeVar("T")
OFF = "off"


def parse_limit(value: str) -> tuple[RateLimitItem, ...]:
    """The limits of a setting in `limits` notation (`600/minute`, several: `10/second;600/minute`); none
    for `off`. GatewaySettings has already refused what does not parse, naming the variable."""
    return () if value.strip().lower() == OFF else tuple(parse_many(value))


@dataclass(frozen=True)
class Quota:
    """Where one limit stands for one caller, as the IETF `RateLimit-*` fields tell it."""

    limit: int
    remaining: int
    reset_s: int
    """Whole seconds (at least 1) until the window has room again."""

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset_s)}


@dataclass(frozen=True)
class LimitSettings:
    """The parsed limits (from GatewaySettings)."""

    per_key: tuple[RateLimitItem, ...] = ()
    per_tenant: tuple[RateLimitItem, ...] = ()
    tokens_per_key: tuple[RateLimitItem, ...] = ()
    tokens_per_tenant: tuple[RateLimitItem, ...] = ()
    auth_failures: tuple[RateLimitItem, ...] = ()

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> LimitSettings:
        return cls(per_key=parse_limit(settings.rate_limit_per_key),
                   per_tenant=parse_limit(settings.rate_limit_per_tenant),
                   tokens_per_key=parse_limit(settings.token_limit_per_key),
                   tokens_per_tenant=parse_limit(settings.token_limit_per_tenant),
                   auth_failures=parse_limit(settings.auth_failure_limit))


class KeyChecker(Protocol):
    """What authenticates keys (gateway.tenants.Authenticator)."""

    def knows(self, key: str) -> bool:
        """Whether `key` is known to be valid without asking the database."""
        ...

    async def principal_for(self, key: str) -> Principal: ...


class _Strategies:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.moving = MovingWindowRateLimiter(storage)
        self.fixed = FixedWindowRateLimiter(storage)


def _seconds_until(reset_time: float) -> int:
    return max(1, math.ceil(reset_time - time.time()))


class Limits:
    """The gateway's limits: Redis while it answers (shared by replicas), in-process counters otherwise."""

    def __init__(self, settings: LimitSettings, *, redis: SharedRedis | None, key_prefix: str) -> None:
        self.settings = settings
        self.redis = redis
        self._local = _Strategies(MemoryStorage())
        self._shared: _Strategies | None = None
        if redis is not None:
            # The gateway's one Redis pool (its timeouts and retries): a Redis that is gone costs no request
            # more than SharedRedis lets it.
            self._shared = _Strategies(RedisStorage(
                "async+redis://", implementation="redispy", key_prefix=f"{key_prefix}ratelimit",
                connection_pool=redis.client.connection_pool))
        self._warned = False

    @property
    def backend(self) -> str:
        return "redis" if self._shared is not None and self.redis is not None and self.redis.up else "memory"

    async def _run(self, action: Callable[[_Strategies], Awaitable[T]]) -> T:
        if self._shared is not None and self.redis is not None:
            if self.redis.up:
                try:
                    result = await action(self._shared)
                    self._warned = False
                    return result
                except REDIS_ERRORS as exc:
                    self.redis.failed(exc)
            if not self._warned:
                self._warned = True
                log.warning("redis unavailable: rate limits are counted per replica until it answers again")
        return await action(self._local)

    async def admit_request(self, *, key_id: str, tenant_id: str) -> Quota | None:
        """Count one request against its key's and its tenant's limits; raise RateLimited when one is
        reached. The quota closest to running out (for the RateLimit-* headers), None without limits.

        The key's limit is taken first: a request its tenant refuses still counts for the key, so one key
        over its own limit never uses up its tenant's."""
        quotas: list[Quota] = []
        for scope, identifier, items, setting in (
                ("key", key_id, self.settings.per_key, "RATE_LIMIT_PER_KEY"),
                ("tenant", tenant_id, self.settings.per_tenant, "RATE_LIMIT_PER_TENANT")):
            for item in items:
                quota = await self._run(lambda s: self._acquire(s, item, f"requests-{scope}", identifier))
                if quota is None:
                    stats = await self._run(lambda s: s.moving.get_window_stats(item, f"requests-{scope}", identifier))
                    refused = Quota(item.amount, 0, _seconds_until(stats.reset_time))
                    raise RateLimited(f"too many requests for this {'API key' if scope == 'key' else 'tenant'}: "
                                      f"{setting} allows {item}; retry in {refused.reset_s} s",
                                      field=setting, retry_after_s=refused.reset_s, headers=refused.headers())
                quotas.append(quota)
        return min(quotas, key=lambda q: (q.remaining, -q.reset_s)) if quotas else None

    @staticmethod
    async def _acquire(strategies: _Strategies, item: RateLimitItem, *identifiers: str) -> Quota | None:
        if not await strategies.moving.hit(item, *identifiers):
            return None
        stats = await strategies.moving.get_window_stats(item, *identifiers)
        return Quota(item.amount, max(0, stats.remaining), _seconds_until(stats.reset_time))

    async def admit_turn(self, *, key_id: str, tenant_id: str) -> None:
        """Raise RateLimited when the key's or the tenant's LLM tokens of the current window are spent."""
        for scope, identifier, items, setting in (
                ("key", key_id, self.settings.tokens_per_key, "TOKEN_LIMIT_PER_KEY"),
                ("tenant", tenant_id, self.settings.tokens_per_tenant, "TOKEN_LIMIT_PER_TENANT")):
            for item in items:
                stats = await self._run(lambda s: s.fixed.get_window_stats(item, f"tokens-{scope}", identifier))
                if stats.remaining <= 0:
                    refused = Quota(item.amount, 0, _seconds_until(stats.reset_time))
                    raise RateLimited(f"this {'API key' if scope == 'key' else 'tenant'} has used its LLM tokens: "
                                      f"{setting} allows {item}; retry in {refused.reset_s} s",
                                      field=setting, retry_after_s=refused.reset_s, headers=refused.headers())

    async def charge_tokens(self, *, key_id: str, tenant_id: str, tokens: int) -> None:
        """Count a finished turn's LLM tokens against its key and its tenant (always, even past the limit)."""
        if tokens <= 0:
            return
        for scope, identifier, items in (("key", key_id, self.settings.tokens_per_key),
                                         ("tenant", tenant_id, self.settings.tokens_per_tenant)):
            for item in items:
                await self._run(lambda s: s.fixed.hit(item, f"tokens-{scope}", identifier, cost=tokens))

    async def authenticate(self, checker: KeyChecker, key: str, *, address: str) -> Principal:
        """`checker`'s principal for `key`, with failed authentications from `address` counted: once they
        reach `AUTH_FAILURE_LIMIT`, a key `checker` does not already know to be valid gets 429 without being
        looked up, until the window has room again."""
        throttled = await self.auth_throttled(address)
        if throttled is not None and not checker.knows(key):
            raise auth_throttled_error(throttled)
        try:
            return await checker.principal_for(key)
        except Unauthorized:
            await self.auth_failed(address)
            raise

    async def auth_throttled(self, address: str) -> Quota | None:
        """The exhausted quota when `address` has had `AUTH_FAILURE_LIMIT` failed authentications in the
        window, else None. The caller then refuses keys it cannot confirm without the database (429);
        keys it knows to be valid still work, so one bad client does not lock out others behind its NAT."""
        for item in self.settings.auth_failures:
            stats = await self._run(lambda s: s.moving.get_window_stats(item, "auth-failures", address))
            if stats.remaining <= 0:
                return Quota(item.amount, 0, _seconds_until(stats.reset_time))
        return None

    async def auth_failed(self, address: str) -> None:
        """Count a failed authentication from `address`."""
        for item in self.settings.auth_failures:
            await self._run(lambda s: s.moving.hit(item, "auth-failures", address))

    async def aclose(self) -> None:
        """Nothing of Redis to close: the pool is SharedRedis's."""
        timer = self._local.storage.timer  # type: ignore[attr-defined]
        if timer is not None:
            timer.cancel()


def auth_throttled_error(quota: Quota) -> RateLimited:
    return RateLimited(f"too many failed authentications from this address: AUTH_FAILURE_LIMIT allows "
                       f"{quota.limit}; retry in {quota.reset_s} s", field="AUTH_FAILURE_LIMIT",
                       retry_after_s=quota.reset_s, headers=quota.headers())
