"""The gateway's public request and response bodies (what the widget and webhooks send)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from supportbot.contracts.common import StrictModel
from supportbot.contracts.dialogue import Channel, ClientMessageId


class NewConversation(StrictModel):
    channel: Channel = "api"


class ConversationCreated(BaseModel):
    id: str
    channel: str
    created_at: datetime
    conversation_token: str | None = None
    """Widget keys only, shown this once: send it as `X-Conversation-Token` with every later call about this
    conversation (only its hash is kept)."""


class NewMessage(StrictModel):
    text: str = Field(min_length=1, max_length=4000,
                      description="the customer's message: 1 to 4,000 characters, not blank, no NUL characters")
    client_message_id: ClientMessageId | None = None
    """Your id for this message (or send `Idempotency-Key`): a retried delivery is answered once."""

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value
