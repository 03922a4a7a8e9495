"""The OpenAI chat-completions wire format, field for field in OpenAI's order.

Requests ignore fields we do not model (clients send many optional ones); what we do model is validated.
Tenant: the `X-Supportbot-Tenant` header, else the `user` field (a tenant slug).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from supportbot.contracts.common import TenantId, Text
from supportbot.contracts.llm import MAX_PROMPT_CHARS, ChatMessage

StopText = Annotated[Text, Field(min_length=1, max_length=256)]


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text = Field(max_length=32_000)


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[Text, Field(max_length=32_000)] | Annotated[list[TextPart], Field(max_length=100)]
    name: str | None = None

    @model_validator(mode="after")
    def _has_text(self) -> OpenAIMessage:
        # Checked here, as a 422 naming the message, not when it becomes a ChatMessage inside the route.
        if not 1 <= len(self.text) <= 32_000:
            raise ValueError("content: give 1 to 32000 characters of text")
        return self

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def to_chat_message(self) -> ChatMessage:
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role=role, content=self.text)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    messages: list[OpenAIMessage] = Field(min_length=1, max_length=200)
    model: Text = Field(min_length=1, max_length=200)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    n: Literal[1] = 1
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: StopText | Annotated[list[StopText], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    user: TenantId | None = None
    # supportbot extension: false skips the response cache for this request
    cache: bool = True

    @field_validator("messages")
    @classmethod
    def _prompt_size(cls, messages: list[OpenAIMessage]) -> list[OpenAIMessage]:
        if sum(len(message.text) for message in messages) > MAX_PROMPT_CHARS:
            raise ValueError(f"more than {MAX_PROMPT_CHARS} characters in all")
        return messages


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ChatCompletionMessage
    logprobs: None = None
    finish_reason: str


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class SupportbotInfo(BaseModel):
    """Extension object: which provider answered, whether from the cache, and why it failed over."""

    provider: str
    cached: bool
    failover_reason: str | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: str | None = None
    supportbot: SupportbotInfo


class ChoiceDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChoiceDelta
    logprobs: None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def usage_of(prompt: int, completion: int) -> CompletionUsage:
    return CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def sse(payload: BaseModel | dict[str, Any] | str) -> bytes:
    """One Server-Sent Event `data:` line."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump_json(exclude_none=False)
    elif isinstance(payload, dict):
        payload = json.dumps(payload, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()
