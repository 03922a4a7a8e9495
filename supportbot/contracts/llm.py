"""llm service contract: `POST /v1/generate`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from supportbot.contracts.common import ConversationId, Source, StrictModel, TenantId


class ChatMessage(StrictModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1, max_length=32_000)


class GenerationContext(StrictModel):
    """What the dialogue service knows about the turn; the offline responder answers from it."""

    intent: str | None = None
    language: str = "en"
    knowledge: list[Source] = Field(default_factory=list, max_length=20)


class GenerateRequest(StrictModel):
    tenant_id: TenantId
    conversation_id: ConversationId | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    context: GenerationContext = Field(default_factory=GenerationContext)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    cache: bool = True


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class GenerateResponse(BaseModel):
    text: str
    usage: Usage
    provider: str
    model: str
    cached: bool
    failover_reason: str | None = None
