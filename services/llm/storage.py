"""llm tables: usage events (one row per generation) and tenant budgets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Numeric, String, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from supportbot.db import Base, UTCDateTime, utcnow


class UsageEvent(Base):
    __tablename__ = "usage_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(63))
    conversation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    provider: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int]
    completion_tokens: Mapped[int]
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 8))
    cached: Mapped[bool]
    estimated: Mapped[bool]
    latency_ms: Mapped[float]
    outcome: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TenantBudget(Base):
    """A tenant's monthly limits; either may be unset. Over `soft_pct` percent warns, over 100 refuses."""

    __tablename__ = "tenant_budgets"

    tenant_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    monthly_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    monthly_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 4), nullable=True)
    soft_pct: Mapped[int] = mapped_column(default=80)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


async def insert_usage_events(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, skipping any whose `request_id` is already stored (replays are idempotent)."""
    if not rows:
        return
    dialect = session.bind.dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    # executemany with one cached statement: a multi-VALUES literal would be compiled anew for every batch,
    # on the event loop's thread, and stall the requests being served meanwhile.
    statement = module.insert(UsageEvent).on_conflict_do_nothing(index_elements=["request_id"])
    await session.execute(statement, list(rows))


async def month_to_date(session: AsyncSession, tenant_id: str, since: datetime) -> tuple[int, Decimal]:
    """Upstream tokens and cost a tenant has used since `since` (cache hits cost nothing)."""
    row = (await session.execute(
        select(func.coalesce(func.sum(UsageEvent.prompt_tokens + UsageEvent.completion_tokens), 0),
               func.coalesce(func.sum(UsageEvent.cost_usd), 0))
        .where(UsageEvent.tenant_id == tenant_id, UsageEvent.created_at >= since)
    )).one()
    return int(row[0]), Decimal(str(row[1]))


async def usage_summary(session: AsyncSession, tenant_id: str, since: datetime | None) -> list[dict[str, Any]]:
    """One row per provider and model: requests, cached requests, tokens and cost."""
    query = (
        select(UsageEvent.provider, UsageEvent.model, func.count().label("requests"),
               func.sum(case((UsageEvent.cached, 1), else_=0)).label("cached_requests"),
               func.sum(UsageEvent.prompt_tokens).label("prompt_tokens"),
               func.sum(UsageEvent.completion_tokens).label("completion_tokens"),
               func.sum(UsageEvent.cost_usd).label("cost_usd"))
        .where(UsageEvent.tenant_id == tenant_id)
        .group_by(UsageEvent.provider, UsageEvent.model)
        .order_by(UsageEvent.provider, UsageEvent.model)
    )
    if since is not None:
        query = query.where(UsageEvent.created_at >= since)
    return [dict(row._mapping) for row in await session.execute(query)]


async def get_budget(session: AsyncSession, tenant_id: str) -> TenantBudget | None:
    return await session.get(TenantBudget, tenant_id)


async def set_budget(session: AsyncSession, *, tenant_id: str, monthly_tokens: int | None,
                     monthly_usd: Decimal | None, soft_pct: int) -> TenantBudget:
    budget = await session.get(TenantBudget, tenant_id)
    if budget is None:
        budget = TenantBudget(tenant_id=tenant_id)
        session.add(budget)
    budget.monthly_tokens = monthly_tokens
    budget.monthly_usd = monthly_usd
    budget.soft_pct = soft_pct
    budget.updated_at = utcnow()
    await session.flush()
    return budget


async def clear_conversation(session: AsyncSession, *, tenant_id: str, conversation_id: str) -> int:
    """Detach the tenant's usage rows from an erased conversation (their counts stay); how many there were."""
    result = await session.execute(
        update(UsageEvent).where(UsageEvent.tenant_id == tenant_id, UsageEvent.conversation_id == conversation_id)
        .values(conversation_id=None))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
