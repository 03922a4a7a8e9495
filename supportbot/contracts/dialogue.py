"""dialogue service contract: conversations, `POST /v1/turns` and transcripts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from supportbot.contracts.common import ConversationId, Intent, NonBlankText, Source, StrictModel, TenantId
from supportbot.contracts.llm import Usage

Channel = Literal["web", "api", "webhook", "email"]


KeyId = Annotated[str, StringConstraints(pattern=r"^key_[0-9a-f]{16}$")]
"""An API key's public id."""
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class WidgetAccess(StrictModel):
    """What a widget key shows to use a conversation: the conversation must have been created by this key and
    `token_hash` must be the SHA-256 of its conversation token, else it is not found (404) like a missing one."""

    key_id: KeyId
    token_hash: Sha256Hex


class CreateConversationRequest(StrictModel):
    tenant_id: TenantId
    channel: Channel = "api"
    created_by_key: KeyId | None = None
    """The id of the API key the conversation was created with."""
    token_hash: Sha256Hex | None = None
    """Widget conversations: SHA-256 of the conversation token the widget must show on every later call."""


class Conversation(BaseModel):
    id: str
    tenant_id: str
    channel: str
    handoff: bool
    created_at: datetime


ClientMessageId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,100}$")]
"""The sender's id for a message: a retried delivery with the same id is answered once, from storage."""


class TurnRequest(StrictModel):
    tenant_id: TenantId
    conversation_id: ConversationId
    text: NonBlankText = Field(min_length=1, max_length=4000)
    channel: Channel = "api"
    client_message_id: ClientMessageId | None = None
    widget: WidgetAccess | None = None
    """Set when a widget key sends the turn: the conversation must be its own (`WidgetAccess`)."""


class Reply(BaseModel):
    text: str
    language: str


class TurnResponse(BaseModel):
    conversation_id: str
    message_id: int
    """The bot's message id; when the bot stays silent (handed off), the customer message's id."""
    reply: Reply | None
    """None once the conversation is handed off: a person answers from then on, not the bot."""
    intent: Intent | None
    out_of_scope: bool = False
    handoff: bool
    handoff_reason: str | None = None
    flow: str | None = None
    sources: list[Source] = []
    provider: str | None = None
    duplicate: bool = False
    """True when this is the stored answer to an earlier delivery of the same client message id."""
    degraded: bool = False
    """True when a service behind dialogue was down or too slow and the reply was made without it."""
    degraded_reasons: list[str] = []
    """Why: "nlp_unavailable", "nlp_timeout" (no intent, no entities, words-only knowledge search),
    "llm_unavailable" (the offline answer from help-center passages and templates)."""
    usage: Usage | None = None
    """The LLM tokens this turn spent, over all its LLM calls (cached answers cost none); None when the llm
    service was not asked (templates, flows, handoffs, the offline answer while it is down). The gateway
    charges them to TOKEN_LIMIT_PER_KEY and TOKEN_LIMIT_PER_TENANT."""


class TranscriptMessage(BaseModel):
    id: int
    role: Literal["customer", "bot"]
    text: str
    intent: str | None = None
    confidence: float | None = None
    provider: str | None = None
    created_at: datetime
    original: str | None = None
    """Only when asked for (`originals=true`, admin keys): the text as typed or said, for a message whose `text`
    had personal data redacted, of a tenant that keeps originals encrypted; else null."""


class Transcript(BaseModel):
    conversation_id: str
    messages: list[TranscriptMessage]
