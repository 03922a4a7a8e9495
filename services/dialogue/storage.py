"""Conversations and their transcripts."""

from __future__ import annotations

import hmac
import secrets
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, Text, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from supportbot.contracts.dialogue import WidgetAccess
from supportbot.db import Base, UTCDateTime, utcnow


class ConversationRow(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(63), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    handoff: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """SHA-256 of the conversation token a widget key must show to use this conversation."""
    created_by_key: Mapped[str | None] = mapped_column(String(32), nullable=True)


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
    client_message_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    response_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    original_encrypted: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The original text, encrypted, for tenants that opted in (`text` always holds the redacted one)."""
    caller_gone: Mapped[bool] = mapped_column(Boolean, default=False)
    """The reply was made after its caller had given up (deadline passed or disconnected): not delivered."""


class KbDocument(Base):
    __tablename__ = "kb_documents"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(63))
    path: Mapped[str] = mapped_column(String(500))
    title: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class KbChunk(Base):
    __tablename__ = "kb_chunks"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("kb_documents.id", ondelete="CASCADE"))
    tenant_id: Mapped[str] = mapped_column(String(63))
    title: Mapped[str] = mapped_column(String(500))
    text: Mapped[str] = mapped_column(Text)


async def create_conversation(session: AsyncSession, *, tenant_id: str, channel: str,
                              created_by_key: str | None = None, token_hash: str | None = None) -> ConversationRow:
    row = ConversationRow(id=secrets.token_urlsafe(16), tenant_id=tenant_id, channel=channel, handoff=False,
                          created_at=utcnow(), created_by_key=created_by_key, token_hash=token_hash)
    session.add(row)
    await session.flush()
    return row


async def get_conversation(session: AsyncSession, *, tenant_id: str, conversation_id: str,
                           widget: WidgetAccess | None = None) -> ConversationRow | None:
    """The conversation if it belongs to `tenant_id` and, for a widget key, was created by that key with the
    token it shows (another tenant's, another key's or a wrong token look exactly like a missing one)."""
    row = await session.scalar(
        select(ConversationRow).where(ConversationRow.id == conversation_id, ConversationRow.tenant_id == tenant_id)
    )
    if row is None or widget is None:
        return row
    # Both compared, in constant time, whatever the first says: a wrong token takes as long as a wrong key.
    same_key = hmac.compare_digest((row.created_by_key or "").encode(), widget.key_id.encode())
    same_token = hmac.compare_digest((row.token_hash or "").encode(), widget.token_hash.encode())
    return row if same_key and same_token and row.token_hash is not None else None


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


async def find_reply_to(session: AsyncSession, *, conversation_id: str, client_message_id: str) -> MessageRow | None:
    """The stored answer to a message delivered before with this client message id: the bot's reply row,
    or the customer's own row when the bot stayed silent (handed off)."""
    rows = list(await session.scalars(select(MessageRow).where(
        MessageRow.conversation_id == conversation_id, MessageRow.client_message_id == client_message_id,
        MessageRow.response_json.is_not(None))))
    return next((r for r in rows if r.role == "bot"), rows[0] if rows else None)


async def find_customer_message(session: AsyncSession, *, conversation_id: str,
                                client_message_id: str) -> MessageRow | None:
    """The customer's message delivered with this client message id, if any."""
    return await session.scalar(select(MessageRow).where(
        MessageRow.conversation_id == conversation_id, MessageRow.client_message_id == client_message_id,
        MessageRow.role == "customer"))


async def replace_document(session: AsyncSession, *, tenant_id: str, path: str, title: str, sha256: str,
                           chunks: list[tuple[str, str]]) -> bool:
    """Store a document's chunks (title, text), replacing an earlier version; False when it is unchanged."""
    existing = await session.scalar(select(KbDocument).where(KbDocument.tenant_id == tenant_id,
                                                             KbDocument.path == path))
    if existing is not None and existing.sha256 == sha256:
        return False
    if existing is not None:
        await session.execute(delete(KbChunk).where(KbChunk.document_id == existing.id))
        await session.delete(existing)
        await session.flush()
    document = KbDocument(tenant_id=tenant_id, path=path, title=title, sha256=sha256, ingested_at=utcnow())
    session.add(document)
    await session.flush()
    session.add_all(KbChunk(document_id=document.id, tenant_id=tenant_id, title=t, text=x) for t, x in chunks)
    await session.flush()
    return True


async def knowledge_version(session: AsyncSession, *, tenant_id: str) -> tuple[int, str | None]:
    """(document count, newest ingestion time): changes whenever the tenant's knowledge base does."""
    count, newest = (await session.execute(select(func.count(KbDocument.id), func.max(KbDocument.ingested_at))
                                           .where(KbDocument.tenant_id == tenant_id))).one()
    return int(count), str(newest) if newest else None


async def knowledge_chunks(session: AsyncSession, *, tenant_id: str) -> list[tuple[str, str, str]]:
    """(title, path, text) of every chunk of the tenant's knowledge base."""
    rows = await session.execute(select(KbChunk.title, KbDocument.path, KbChunk.text)
                                 .join(KbDocument, KbDocument.id == KbChunk.document_id)
                                 .where(KbChunk.tenant_id == tenant_id).order_by(KbChunk.id))
    return [(title, path, text) for title, path, text in rows]


async def list_conversations(session: AsyncSession, *, tenant_id: str, limit: int,
                             after: tuple[datetime, str] | None = None, channel: str | None = None,
                             handoff: bool | None = None, created_after: datetime | None = None,
                             created_before: datetime | None = None,
                             ) -> list[tuple[ConversationRow, int, datetime | None]]:
    """The tenant's conversations newest first by (created_at, id), those past `after` only, each with its
    message count and newest message time. Two queries: the page (on the (tenant_id, created_at) index), then
    the counts of just its conversations (on messages' (conversation_id, id) index)."""
    query = select(ConversationRow).where(ConversationRow.tenant_id == tenant_id)
    if after is not None:
        created, conversation_id = after
        query = query.where(or_(ConversationRow.created_at < created,
                                and_(ConversationRow.created_at == created, ConversationRow.id < conversation_id)))
    if channel is not None:
        query = query.where(ConversationRow.channel == channel)
    if handoff is not None:
        query = query.where(ConversationRow.handoff == handoff)
    if created_after is not None:
        query = query.where(ConversationRow.created_at >= created_after)
    if created_before is not None:
        query = query.where(ConversationRow.created_at < created_before)
    rows = list(await session.scalars(
        query.order_by(ConversationRow.created_at.desc(), ConversationRow.id.desc()).limit(limit)))
    if not rows:
        return []
    stats = {conversation_id: (int(count), last) for conversation_id, count, last in await session.execute(
        select(MessageRow.conversation_id, func.count(MessageRow.id), func.max(MessageRow.created_at))
        .where(MessageRow.conversation_id.in_([row.id for row in rows]))
        .group_by(MessageRow.conversation_id))}
    return [(row, *stats.get(row.id, (0, None))) for row in rows]


async def erase_conversation(session: AsyncSession, *, tenant_id: str, conversation_id: str) -> int | None:
    """Delete the tenant's conversation and its messages; how many messages it had, None if there is no such
    conversation of this tenant."""
    if await get_conversation(session, tenant_id=tenant_id, conversation_id=conversation_id) is None:
        return None
    # Explicitly, not by the foreign key's cascade: SQLite enforces that only with a pragma.
    deleted = await session.execute(delete(MessageRow).where(MessageRow.conversation_id == conversation_id))
    await session.execute(delete(ConversationRow).where(ConversationRow.id == conversation_id,
                                                        ConversationRow.tenant_id == tenant_id))
    return int(deleted.rowcount or 0)  # type: ignore[attr-defined]
