"""The data files that ship inside the package: default intents, knowledge base, reply templates, prompts."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

DATA_DIR = Path(__file__).parent / "data"
DEFAULT_INTENTS_CSV = DATA_DIR / "intents" / "default.csv"
DEFAULT_KNOWLEDGE_DIR = DATA_DIR / "knowledge"
SUPPORTED_REPLY_LANGUAGES = ("en", "ja")


@cache
def reply_templates() -> dict[str, dict[str, str]]:
    """`responses.yaml`: reply text per intent (or situation) per language."""
    return yaml.safe_load((DATA_DIR / "responses.yaml").read_text(encoding="utf-8"))


def reply(key: str, language: str) -> str | None:
    """The template for `key` in `language`, falling back to English; None if there is none."""
    texts = reply_templates().get(key)
    if not texts:
        return None
    return texts.get(language) or texts.get("en")


@cache
def prompts() -> dict[str, str]:
    """`prompts.yaml`: the LLM prompt templates."""
    return yaml.safe_load((DATA_DIR / "prompts.yaml").read_text(encoding="utf-8"))
