"""The provider interface every generation backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from supportbot.contracts.llm import ChatMessage, GenerationContext


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    estimated: bool = False


class ProviderError(Exception):
    """The provider could not answer; `reason` is a short machine-readable cause (timeout, http_500, …)."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(message or reason)
        self.reason = reason


class Provider(Protocol):
    name: str
    model: str
    cacheable: bool
    """Whether answers may be stored in the response cache (an offline answer must not outlive an outage)."""

    async def generate(self, messages: list[ChatMessage], context: GenerationContext, *,
                       temperature: float, max_tokens: int) -> Generation: ...

    async def aclose(self) -> None: ...
