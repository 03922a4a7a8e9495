"""The offline answer: what a customer gets when no language model can answer.

Built from the knowledge passages and reply templates of the turn, never invented, and it always says the
assistant is offline. The llm service's offline responder answers with it when every provider is down, and
the dialogue service builds the same answer itself when it cannot reach the llm service at all.
"""

from __future__ import annotations

from supportbot.contracts.llm import GenerationContext
from supportbot.resources import reply

OFFLINE_PROVIDER = "offline"
OFFLINE_MODEL = "offline-responder"


def offline_answer(context: GenerationContext) -> str:
    """The best help-center passage, else the intent's template, else an offer of a person; in the turn's language."""
    language = context.language
    prefix = reply("offline_prefix", language) or ""
    if context.knowledge:
        best = context.knowledge[0]
        return f"{prefix}\n\n{best.snippet.strip()}\n\n({best.title})"
    if context.intent and (template := reply(context.intent, language)):
        return f"{prefix}\n\n{template}"
    return reply("offline_no_answer", language) or prefix
