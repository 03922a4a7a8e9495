"""Tenants: the table every service reads (the gateway creates them, dialogue and llm check them)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from supportbot.db import Base, UTCDateTime, utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    keep_originals: Mapped[bool] = mapped_column(Boolean, default=False)
    """Opt-in: keep each message's original text too, encrypted at rest, readable by admin keys only."""
