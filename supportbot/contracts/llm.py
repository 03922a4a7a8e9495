"""llm service contract for internal callers: `POST /v1/generate`.

With `stream: true` the answer is Server-Sent Events: `data: {"delta": "..."}` per piece of text, then one
`data: {"response": GenerateResponse}` with usage, provider and cache status, then `data: [DONE]`.
The OpenAI-compatible API (`/v1/chat/completions`) is modelled in `services/llm/protocol.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from supportbot.contracts.common import ConversationId, Source, StrictModel, TenantId, Text

MAX_PROMPT_CHARS = 400_000
"""All messages of one request together (about 100k tokens: more than any model we call takes)."""


class ToolFunction(StrictModel):
    """A function the model may call (OpenAI function calling); `parameters` is its JSON Schema."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: Text | None = Field(default=None, max_length=4000)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolSpec(StrictModel):
    type: Literal["function"] = "function"
    function: ToolFunction


class ToolCallFunction(BaseModel):
    name: str
    arguments: str
    """JSON text, as the model wrote it (may be invalid: the caller validates)."""


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(StrictModel):
    """A chat message. An assistant message may carry `tool_calls` instead of text; a `tool` message answers
    one of them (`tool_call_id`)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: Text | None = Field(default=None, min_length=1, max_length=32_000)
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=64)
    tool_call_id: Text | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (only an assistant message with tool_calls may omit it)")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        return self

    @property
    def text(self) -> str:
        return self.content or ""


class GenerationContext(StrictModel):
    """What the dialogue service knows about the turn; the offline responder answers from it."""

    intent: Text | None = Field(default=None, max_length=100)
    language: Text = Field(default="en", max_length=16)
    knowledge: list[Source] = Field(default_factory=list, max_length=20)


class GenerateRequest(StrictModel):
    tenant_id: TenantId
    conversation_id: ConversationId | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    context: GenerationContext = Field(default_factory=GenerationContext)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: list[Annotated[Text, Field(min_length=1, max_length=256)]] | None = Field(default=None, max_length=4)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    tools: list[ToolSpec] | None = Field(default=None, max_length=64)
    """Functions the model may call; the answer then may hold `tool_calls` instead of text (not streamed)."""
    stream: bool = False
    cache: bool = True
    """False skips the response cache for this request (no read, no write)."""

    @field_validator("messages")
    @classmethod
    def _prompt_size(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if sum(len(message.content or "") for message in messages) > MAX_PROMPT_CHARS:
            raise ValueError(f"more than {MAX_PROMPT_CHARS} characters in all")
        return messages


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
    tool_calls: list[ToolCall] | None = None


class GenerateStreamEvent(BaseModel):
    """One SSE event of a streamed `/v1/generate`: a piece of text, or the final summary."""

    delta: str | None = None
    response: GenerateResponse | None = None
