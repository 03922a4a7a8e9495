"""Hosted generation through the official async OpenAI SDK (any OpenAI-compatible base URL)."""

from __future__ import annotations

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion

from services.llm.providers.base import Generation, ProviderError
from supportbot.contracts.llm import ChatMessage, GenerationContext


class OpenAIProvider:
    cacheable = True

    def __init__(self, *, api_key: str, base_url: str | None, model: str, timeout_s: float, max_retries: int,
                 name: str = "openai") -> None:
        self.name = name
        self.model = model
        self.client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries)

    async def generate(self, messages: list[ChatMessage], context: GenerationContext, *,
                       temperature: float, max_tokens: int) -> Generation:
        try:
            completion = await self.client.chat.completions.create(
                model=self.model,
                messages=[m.model_dump() for m in messages],  # type: ignore[misc]
                temperature=temperature,
                max_tokens=max_tokens,
            )
        except openai.APITimeoutError as exc:
            raise ProviderError("timeout", "provider timed out") from exc
        except openai.APIStatusError as exc:
            raise ProviderError(f"http_{exc.status_code}", "provider returned an error status") from exc
        except openai.APIError as exc:  # connection errors, unparsable bodies
            raise ProviderError(type(exc).__name__.lower(), "provider request failed") from exc
        if not isinstance(completion, ChatCompletion):  # the SDK hands back non-JSON bodies as they came
            raise ProviderError("invalid_response", "provider returned something that is not a completion")
        if not completion.choices or not (completion.choices[0].message.content or "").strip():
            raise ProviderError("empty_response", "provider returned no text")
        usage = completion.usage
        return Generation(
            text=completion.choices[0].message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            model=completion.model or self.model,
            estimated=usage is None,
        )

    async def aclose(self) -> None:
        await self.client.close()
