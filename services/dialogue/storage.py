"""Conversations and their transcripts."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from supportbot.db import Base, UTCDateTime, utcnow


class ConversationRow(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(63), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    handoff: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MessageRow(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    intent: Mapped[str | None] = mapped_column(String(100), nullable=True)
    confidence: Mapped[float | None] = mapped_column(nullable=True)
    provider: Mapped[str | None] = mapped_column(String(50), nullable=True)
    latency_ms: Mapped[float | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


async def create_conversation(session: AsyncSession, *, tenant_id: str, channel: str) -> ConversationRow:
    row = ConversationRow(id=secrets.token_urlsafe(16), tenant_id=tenant_id, channel=channel, handoff=False,
                          created_at=utcnow())
    session.add(row)
    await session.flush()
    return row


async def get_conversation(session: AsyncSession, *, tenant_id: str, conversation_id: str) -> ConversationRow | None:
    """The conversation if it belongs to `tenant_id` (another tenant's looks exactly like a missing one)."""
    return await session.scalar(
        select(ConversationRow).where(ConversationRow.id == conversation_id, ConversationRow.tenant_id == tenant_id)
    )


async def set_handoff(session: AsyncSession, *, conversation_id: str) -> None:
    await session.execute(update(ConversationRow).where(ConversationRow.id == conversation_id).values(handoff=True))


async def add_message(session: AsyncSession, message: MessageRow) -> MessageRow:
    session.add(message)
    await session.flush()
    return message


async def list_messages(session: AsyncSession, *, conversation_id: str, last: int | None = None) -> list[MessageRow]:
    """Messages oldest first; with `last`, only the newest `last` of them."""
    query = select(MessageRow).where(MessageRow.conversation_id == conversation_id)
    if last is None:
        return list(await session.scalars(query.order_by(MessageRow.id)))
    newest = list(await session.scalars(query.order_by(MessageRow.id.desc()).limit(last)))
    return newest[::-1]
