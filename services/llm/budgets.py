"""Per-tenant monthly budgets (tokens and/or USD), enforced atomically across replicas.

Before a call the service reserves its worst case (prompt tokens + `max_tokens`, and their price); after it,
the reservation is settled to what was actually used. Reserve is one Lua script on a per-tenant, per-month
Redis hash — check and add in one step — so a burst of concurrent requests on any number of replicas cannot
overspend. The hash is seeded from the SQL usage table (the source of truth) the first time a month is seen,
and expires after the month. Without Redis, or while it is down, each process keeps the counters itself
(seeded the same way; not shared). When Redis answers again, the months this process counted by itself are
dropped there, so that they are seeded afresh from the usage table, which holds what every replica spent
meanwhile. Cost is counted in integer nano-dollars so Redis arithmetic stays exact. Keys start with the
settings' `redis_key_prefix`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.llm.storage import TenantBudget, get_budget, month_to_date
from supportbot.cache import REDIS_ERRORS, SharedRedis
from supportbot.errors import BudgetExceeded

log = logging.getLogger(__name__)
NANO = Decimal(1_000_000_000)
_MONTH_TTL_S = 40 * 24 * 3600

# KEYS: counters hash. ARGV: seed_tokens, seed_nano (-1: not read yet), add_tokens, add_nano, limit_tokens,
# limit_nano (-1: none). Returns {status, tokens, nano, which}; status -1: seed needed, 0: refused, 1: reserved.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if tonumber(ARGV[1]) < 0 then return {-1, 0, 0, ''} end
  redis.call('HSET', KEYS[1], 'tokens', ARGV[1], 'nano', ARGV[2])
  redis.call('EXPIRE', KEYS[1], %d)
end
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
local nano = tonumber(redis.call('HGET', KEYS[1], 'nano'))
local lt, ln = tonumber(ARGV[5]), tonumber(ARGV[6])
if lt >= 0 and tokens + tonumber(ARGV[3]) > lt then return {0, tokens, nano, 'monthly_tokens'} end
if ln >= 0 and nano + tonumber(ARGV[4]) > ln then return {0, tokens, nano, 'monthly_usd'} end
tokens = redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[3])
nano = redis.call('HINCRBY', KEYS[1], 'nano', ARGV[4])
return {1, tokens, nano, ''}
""" % _MONTH_TTL_S

_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'nano', ARGV[2])
end
return 1
"""


@dataclass
class Reservation:
    tenant_id: str
    month: str
    tokens: int
    nano: int
    warning: str | None
    in_redis: bool


def month_start(now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class BudgetGuard:
    """Reserve and settle token/cost budgets; tenants without a budget row are not limited."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], redis: SharedRedis | None, *,
                 refresh_s: float = 10.0, key_prefix: str = "supportbot:") -> None:
        self.sessions = sessions
        self.redis = redis
        self.refresh_s = refresh_s
        self.key_prefix = key_prefix
        self._budgets: dict[str, tuple[float, TenantBudget | None]] = {}
        self._local: dict[tuple[str, str], list[int]] = {}
        self._reserve = redis.client.register_script(_RESERVE) if redis is not None else None
        self._settle = redis.client.register_script(_SETTLE) if redis is not None else None
        if redis is not None:
            redis.on_recovery(self._reseed_after_outage)

    async def budget(self, tenant_id: str) -> TenantBudget | None:
        cached = self._budgets.get(tenant_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        try:
            async with self.sessions() as session:
                budget = await get_budget(session, tenant_id)
        except Exception as exc:  # noqa: BLE001 — a database outage must not stop generation
            log.warning("budget not readable, using the last known: %s", type(exc).__name__)
            return cached[1] if cached else None
        self._budgets[tenant_id] = (time.monotonic() + self.refresh_s, budget)
        return budget

    async def reserve(self, tenant_id: str, *, tokens: int, cost_usd: Decimal) -> Reservation | None:
        """Reserve the worst case of one call, or raise `BudgetExceeded`; None when the tenant has no budget."""
        budget = await self.budget(tenant_id)
        if budget is None or (budget.monthly_tokens is None and budget.monthly_usd is None):
            return None
        month = month_start().strftime("%Y-%m")
        nano = int(cost_usd * NANO)
        limit_tokens = budget.monthly_tokens if budget.monthly_tokens is not None else -1
        limit_nano = int(budget.monthly_usd * NANO) if budget.monthly_usd is not None else -1
        limits = (tokens, nano, limit_tokens, limit_nano)
        in_redis = False
        result: tuple[int, int, int, str] | None = None
        if self._reserve is not None and self.redis is not None and self.redis.up:
            try:
                result = await self._redis_reserve(tenant_id, month, *limits)
                in_redis = True
            except REDIS_ERRORS as exc:
                self.redis.failed(exc)  # budgets enforced per process until it answers again
        if result is None:
            result = await self._local_reserve(tenant_id, month, *limits)
        status, used_tokens, used_nano, which = result
        if status == 0:
            limit = (f"{budget.monthly_tokens} tokens" if which == "monthly_tokens"
                     else f"${budget.monthly_usd}")
            log.warning("budget exceeded, request refused", extra={"supportbot.tenant": tenant_id,
                                                                   "supportbot.budget": which})
            raise BudgetExceeded(f"tenant {tenant_id} has used its monthly budget ({which}: {limit})", field=which)
        warning = _soft_warning(budget, used_tokens, used_nano)
        if warning:
            log.warning("budget soft limit reached", extra={"supportbot.tenant": tenant_id,
                                                            "supportbot.budget": warning})
        return Reservation(tenant_id, month, tokens, nano, warning, in_redis)

    async def settle(self, reservation: Reservation | None, *, tokens: int, cost_usd: Decimal) -> None:
        """Replace the reservation by what was actually used."""
        if reservation is None:
            return
        delta_tokens = tokens - reservation.tokens
        delta_nano = int(cost_usd * NANO) - reservation.nano
        if reservation.in_redis and self._settle is not None and self.redis is not None:
            if not self.redis.up:
                return  # the counters keep the worst case: they err on the safe side
            try:
                await self._settle(keys=[self._key(reservation.tenant_id, reservation.month)],
                                   args=[delta_tokens, delta_nano])
            except REDIS_ERRORS as exc:
                self.redis.failed(exc)
            return
        counters = self._local.get((reservation.tenant_id, reservation.month))
        if counters is not None:
            counters[0] += delta_tokens
            counters[1] += delta_nano

    async def _seed(self, tenant_id: str) -> tuple[int, int]:
        async with self.sessions() as session:
            tokens, cost = await month_to_date(session, tenant_id, month_start())
        return tokens, int(cost * NANO)

    async def _redis_reserve(self, tenant_id: str, month: str, tokens: int, nano: int, limit_tokens: int,
                             limit_nano: int) -> tuple[int, int, int, str]:
        assert self._reserve is not None
        key = self._key(tenant_id, month)
        seed = (-1, -1)
        for _ in range(2):
            status, used_tokens, used_nano, which = await self._reserve(
                keys=[key], args=[*seed, tokens, nano, limit_tokens, limit_nano])
            if status != -1:
                return int(status), int(used_tokens), int(used_nano), _text(which)
            seed = await self._seed(tenant_id)
        raise RuntimeError("budget counters could not be seeded")

    async def _local_reserve(self, tenant_id: str, month: str, tokens: int, nano: int, limit_tokens: int,
                             limit_nano: int) -> tuple[int, int, int, str]:
        counters = self._local.get((tenant_id, month))
        if counters is None:
            seeded = list(await self._seed(tenant_id))
            counters = self._local.setdefault((tenant_id, month), seeded)  # another task may have seeded it
        if limit_tokens >= 0 and counters[0] + tokens > limit_tokens:
            return 0, counters[0], counters[1], "monthly_tokens"
        if limit_nano >= 0 and counters[1] + nano > limit_nano:
            return 0, counters[0], counters[1], "monthly_usd"
        counters[0] += tokens
        counters[1] += nano
        return 1, counters[0], counters[1], ""

    def _key(self, tenant_id: str, month: str) -> str:
        return f"{self.key_prefix}llm:budget:{tenant_id}:{month}"

    async def _reseed_after_outage(self) -> bool:
        """Redis is back: forget the months counted here alone, there and here, so the next reservation seeds
        them from the usage table (what every replica recorded during the outage)."""
        if not self._local or self.redis is None:
            return False
        months = list(self._local)
        await self.redis.client.delete(*(self._key(tenant, month) for tenant, month in months))
        for month_key in months:
            self._local.pop(month_key, None)
        return True


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _soft_warning(budget: TenantBudget, used_tokens: int, used_nano: int) -> str | None:
    """`monthly_tokens=85%` style text when a limit's soft percentage is reached."""
    parts = []
    if budget.monthly_tokens and used_tokens * 100 >= budget.monthly_tokens * budget.soft_pct:
        parts.append(f"monthly_tokens={used_tokens * 100 // budget.monthly_tokens}%")
    if budget.monthly_usd and used_nano * 100 >= int(budget.monthly_usd * NANO) * budget.soft_pct:
        parts.append(f"monthly_usd={used_nano * 100 // int(budget.monthly_usd * NANO)}%")
    return ", ".join(parts) or None
