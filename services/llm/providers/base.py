"""The provider interface every generation backend implements.

A provider is one way to produce text — the hosted OpenAI API, an OpenAI-compatible local server, an
in-process model, the offline responder. It has:

- `name` (short, in responses and usage rows: ``openai``, ``local``, ``offline``), `model` (the model it
  answers with) and `cacheable` (whether its answers may be stored in the response cache — an offline answer
  must not outlive an outage);
- `generate(messages, context, *, temperature, max_tokens, options=NO_OPTIONS)` → `Generation`, the whole
  answer (`options`: top_p, stop, seed, penalties, tools — a provider ignores what it cannot do);
- `stream(messages, context, *, temperature, max_tokens, options=NO_OPTIONS)` → an async iterator of
  `Delta`s: text pieces, and at most one `Delta` carrying `usage` (usually last);
- `aclose()`.

Providers do one attempt and raise `ProviderError` on any failure (with `retryable` and `retry_after` set
when a retry may help). Retries, circuit breakers and failover are not theirs: they live in
`services/llm/failover.py`, the same for every provider. A provider that cannot count tokens sets
`Generation.estimated` (or sends no usage in a stream) and the service counts them with tiktoken.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from supportbot.contracts.llm import ChatMessage, GenerationContext, ToolCall, ToolSpec


@dataclass(frozen=True)
class GenerationOptions:
    """Optional parameters, as in the OpenAI API; None means the provider's default."""

    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: tuple[ToolSpec, ...] | None = None


NO_OPTIONS = GenerationOptions()


@dataclass(frozen=True)
class SamplingParams:
    """Everything that shapes an answer besides the messages (and so part of its cache key)."""

    temperature: float
    max_tokens: int
    options: GenerationOptions = NO_OPTIONS


@dataclass(frozen=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    estimated: bool = False
    finish_reason: str = "stop"
    tool_calls: tuple[ToolCall, ...] | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer: text, and/or the usage the provider reported for the whole answer."""

    text: str = ""
    usage: TokenUsage | None = None
    model: str | None = None
    finish_reason: str | None = None


class ProviderError(Exception):
    """The provider could not answer; `reason` is a short machine-readable cause (timeout, http_500, …).

    `retryable`: a retry of the same request may succeed (429, 5xx, timeouts, dropped connections).
    `retry_after`: seconds the provider asked us to wait (Retry-After), if it said.
    `breaker`: the failure says the provider is unhealthy (a 400 for one bad request does not).
    """

    def __init__(self, reason: str, message: str = "", *, retryable: bool = False,
                 retry_after: float | None = None, breaker: bool = True) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.breaker = breaker


class Provider(Protocol):
    name: str
    model: str
    cacheable: bool

    async def generate(self, messages: list[ChatMessage], context: GenerationContext, *, temperature: float,
                       max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> Generation: ...

    def stream(self, messages: list[ChatMessage], context: GenerationContext, *, temperature: float,
               max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> AsyncIterator[Delta]: ...

    async def aclose(self) -> None: ...
