"""Contract of the routes behind the gateway's admin API: listing and erasing conversations (dialogue),
usage and erasing a conversation's LLM data (llm).

A page of conversations is ordered newest first by (created_at, id); its `next_cursor` is an opaque token
(base64url of the last item's created_at and id) that the next request passes back as `cursor`. Both the gateway
and dialogue validate it (`PageCursor`), so a bad one is a 422 naming `cursor` wherever it arrives.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel

_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def encode_cursor(created_at: datetime, conversation_id: str) -> str:
    """The cursor pointing just past the conversation (`created_at` must be timezone-aware)."""
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), conversation_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of the last conversation of the previous page; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, conversation_id = json.loads(raw)
        when = datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValueError("not a cursor this API returned: pass `next_cursor` from the previous page as it is") \
            from None
    if when.tzinfo is None or not isinstance(conversation_id, str) or not _ID.match(conversation_id):
        raise ValueError("not a cursor this API returned: pass `next_cursor` from the previous page as it is")
    return when, conversation_id


def _valid_cursor(cursor: str) -> str:
    if len(cursor) > 200:
        raise ValueError("not a cursor this API returned: pass `next_cursor` from the previous page as it is")
    decode_cursor(cursor)
    return cursor


PageCursor = Annotated[str, AfterValidator(_valid_cursor)]
"""A `next_cursor` from an earlier page (checked, still passed on as text)."""


def as_utc(value: datetime) -> datetime:
    """A query's timestamp in UTC; one without a zone is read as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _utc(value: datetime) -> datetime:
    try:
        return as_utc(value)
    except OverflowError:  # 0001-01-01T00:00+05:00 has no UTC form
        raise ValueError("out of range once converted to UTC") from None


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]
"""A query's timestamp, in UTC (see `as_utc`); one that has no UTC form is a 422, not an OverflowError."""


class ConversationSummary(BaseModel):
    id: str
    channel: str
    handoff: bool
    created_at: datetime
    message_count: int
    last_message_at: datetime | None
    """When the newest message was stored; None for a conversation without messages."""


class ConversationPage(BaseModel):
    items: list[ConversationSummary]
    next_cursor: str | None
    """Pass it as `cursor` for the next page; None on the last page."""


class ConversationErased(BaseModel):
    """What dialogue erased of one conversation."""

    conversation_id: str
    messages: int


class LlmErasure(BaseModel):
    """What llm erased of one conversation: cached replies deleted, usage rows whose conversation id it cleared
    (their counts stay). `found` is False when it knew nothing of the conversation."""

    conversation_id: str
    cache_entries: int
    usage_rows: int

    @property
    def found(self) -> bool:
        return self.cache_entries > 0 or self.usage_rows > 0


class UsageLine(BaseModel):
    provider: str
    model: str
    requests: int
    cached_requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class UsageTotals(BaseModel):
    requests: int
    cached_requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class UsageReport(BaseModel):
    """A tenant's LLM usage since `since`, per provider and model (cache hits count as requests, cost nothing)."""

    tenant_id: str
    since: datetime
    totals: UsageTotals
    by_provider_model: list[UsageLine]
