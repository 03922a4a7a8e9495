"""The last resort: answers from the knowledge passages and reply templates it is given, and says so.

It never pretends to be an LLM: every answer starts by telling the customer the assistant is offline.
"""

from __future__ import annotations

from services.llm.providers.base import Generation
from supportbot.contracts.llm import ChatMessage, GenerationContext
from supportbot.resources import reply


class OfflineResponder:
    name = "offline"
    model = "offline-responder"
    cacheable = False

    async def generate(self, messages: list[ChatMessage], context: GenerationContext, *,
                       temperature: float, max_tokens: int) -> Generation:
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

    async def aclose(self) -> None:
        return None
