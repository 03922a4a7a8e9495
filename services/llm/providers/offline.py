"""The last resort: answers from the knowledge passages and reply templates it is given, and says so.

It never pretends to be an LLM: every answer tells the customer the assistant is offline. The answer itself
is `supportbot.offline_answer`, which the dialogue service also uses when the llm service is down.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from services.llm.providers.base import NO_OPTIONS, Delta, Generation, GenerationOptions, TokenUsage
from supportbot.contracts.llm import ChatMessage, GenerationContext
from supportbot.offline_answer import OFFLINE_MODEL, OFFLINE_PROVIDER, offline_answer


class OfflineResponder:
    name = OFFLINE_PROVIDER
    model = OFFLINE_MODEL
    cacheable = False

    async def generate(self, messages: list[ChatMessage], context: GenerationContext, *, temperature: float,
                       max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> Generation:
        return Generation(text=offline_answer(context), prompt_tokens=0, completion_tokens=0, model=self.model)

    async def stream(self, messages: list[ChatMessage], context: GenerationContext, *, temperature: float,
                     max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> AsyncIterator[Delta]:
        answer = await self.generate(messages, context, temperature=temperature, max_tokens=max_tokens)
        for piece in split_for_streaming(answer.text):
            yield Delta(text=piece, model=self.model)
        yield Delta(usage=TokenUsage(0, 0), model=self.model, finish_reason="stop")

    async def aclose(self) -> None:
        return None


def split_for_streaming(text: str, words_per_chunk: int = 4) -> list[str]:
    """Split `text` into chunks of a few words (whitespace kept), so a replay is a real stream."""
    tokens = re.findall(r"\S+\s*|\s+", text)
    return ["".join(tokens[i:i + words_per_chunk]) for i in range(0, len(tokens), words_per_chunk)] or [text]
