"""OpenAI and any OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama) through the official async SDK.

The SDK's own retries are off (`max_retries=0`): the one retry policy is in `services.llm.failover`.
Streams always ask for `stream_options.include_usage`, so token counts come from the server when it can.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from services.llm.providers.base import NO_OPTIONS, Delta, Generation, GenerationOptions, ProviderError, TokenUsage
from supportbot.contracts.llm import ChatMessage, GenerationContext, ToolCall

_NOT_PROVIDER_HEALTH = {400, 413, 422}  # our request was refused: fail over, but the provider is fine


class OpenAIProvider:
    """One OpenAI-compatible endpoint; `name` is ``openai`` for the hosted API, ``local`` for a local server."""

    cacheable = True

    def __init__(self, *, api_key: str, base_url: str | None, model: str, connect_timeout_s: float,
                 read_timeout_s: float, name: str = "openai") -> None:
        self.name = name
        self.model = model
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s)
        self.client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)

    def _arguments(self, messages: list[ChatMessage], temperature: float, max_tokens: int,
                   options: GenerationOptions) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump(exclude_none=True) for m in messages],
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        optional = {"top_p": options.top_p, "stop": list(options.stop) if options.stop else None,
                    "seed": options.seed, "presence_penalty": options.presence_penalty,
                    "frequency_penalty": options.frequency_penalty,
                    "tools": [tool.model_dump(exclude_none=True) for tool in options.tools] if options.tools else None}
        arguments.update({name: value for name, value in optional.items() if value is not None})
        return arguments

    async def generate(self, messages: list[ChatMessage], context: GenerationContext, *, temperature: float,
                       max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> Generation:
        try:
            completion = await self.client.chat.completions.create(
                **self._arguments(messages, temperature, max_tokens, options))
        except openai.APIError as exc:
            raise provider_error(exc) from exc
        if not isinstance(completion, ChatCompletion):  # the SDK hands back non-JSON bodies as they came
            raise ProviderError("invalid_response", "provider returned something that is not a completion",
                                retryable=True)
        message = completion.choices[0].message if completion.choices else None
        calls = tuple(ToolCall.model_validate(call.model_dump()) for call in message.tool_calls or []
                      if call.type == "function") if message else ()
        if message is None or not ((message.content or "").strip() or calls):
            raise ProviderError("empty_response", "provider returned no text", retryable=True)
        usage = completion.usage
        return Generation(
            text=message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            model=completion.model or self.model,
            estimated=usage is None,
            finish_reason=completion.choices[0].finish_reason or "stop",
            tool_calls=calls or None,
        )

    async def stream(self, messages: list[ChatMessage], context: GenerationContext, *, temperature: float,
                     max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> AsyncIterator[Delta]:
        try:
            chunks = await self.client.chat.completions.create(
                **self._arguments(messages, temperature, max_tokens, options), stream=True,
                stream_options={"include_usage": True})
            async for chunk in chunks:
                if not isinstance(chunk, ChatCompletionChunk):
                    raise ProviderError("invalid_response", "provider sent a malformed chunk", retryable=True)
                usage = (TokenUsage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                         if chunk.usage else None)
                choice = chunk.choices[0] if chunk.choices else None
                text = (choice.delta.content or "") if choice else ""
                if text or usage or (choice and choice.finish_reason):
                    yield Delta(text=text, usage=usage, model=chunk.model or self.model,
                                finish_reason=choice.finish_reason if choice else None)
        except openai.APIError as exc:
            raise provider_error(exc) from exc
        except httpx.TimeoutException as exc:
            raise ProviderError("timeout", "provider stream timed out", retryable=True) from exc
        except (httpx.HTTPError, ValueError) as exc:  # connection cut mid-stream, undecodable chunk
            raise ProviderError("stream_broken", f"provider stream failed: {type(exc).__name__}",
                                retryable=True) from exc

    async def aclose(self) -> None:
        await self.client.close()


def provider_error(exc: openai.APIError) -> ProviderError:
    """Map an SDK error to a `ProviderError` with its retry hints."""
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError("timeout", "provider timed out", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        retryable = status == 429 or status >= 500 or status in (408, 409)
        return ProviderError(f"http_{status}", "provider returned an error status", retryable=retryable,
                             retry_after=retry_after_s(exc.response.headers),
                             breaker=status not in _NOT_PROVIDER_HEALTH)
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError("connection_error", "provider unreachable", retryable=True)
    return ProviderError("invalid_response", f"provider request failed: {type(exc).__name__}", retryable=True)


def retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds from `retry-after-ms` (OpenAI), or `Retry-After` as seconds or an HTTP date."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
