"""The last resort: answers from the knowledge passages and reply templates it is given, and says so.

It never pretends to be an LLM: every answer starts by telling the customer the assistant is offline.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from services.llm.providers.base import NO_OPTIONS, Delta, Generation, GenerationOptions, TokenUsage
from supportbot.contracts.llm import ChatMessage, GenerationContext
from supportbot.resources import reply


class OfflineResponder:
    name = "offline"
    model = "offline-responder"
    cacheable = False

    async def generate(self, messages: list[ChatMessage], context: GenerationContext, *, temperature: float,
                       max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> Generation:
        language = context.language
        prefix = reply("offline_prefix", language) or ""
        if context.knowledge:
            best = context.knowledge[0]
            text = f"{prefix}\n\n{best.snippet.strip()}\n\n({best.title})"
        elif context.intent and (template := reply(context.intent, language)):
            text = f"{prefix}\n\n{template}"
        else:
            text = reply("offline_no_answer", language) or prefix
        return Generation(text=text, prompt_tokens=0, completion_tokens=0, model=self.model)

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
