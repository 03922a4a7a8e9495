"""Builds the LLM messages for a turn from the prompt templates in `prompts.yaml` (langchain)."""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from supportbot.contracts.common import Source
from supportbot.contracts.llm import ChatMessage
from supportbot.resources import prompts

_ROLES = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}


def _template() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([
        ("system", prompts()["system"]),
        MessagesPlaceholder("history"),
        ("human", "{question}"),
    ])


def _knowledge_block(sources: list[Source]) -> str:
    if not sources:
        return prompts()["no_knowledge"]
    return "\n\n".join(f"[{i}] {s.title}\n{s.snippet}" for i, s in enumerate(sources, start=1))


def build_messages(*, question: str, history: list[tuple[str, str]], sources: list[Source], intent: str | None,
                   language: str, company: str) -> list[ChatMessage]:
    """System prompt with the passages, then the recent history (role, text), then the question."""
    lc_history: list[BaseMessage] = [
        HumanMessage(text) if role == "customer" else AIMessage(text) for role, text in history
    ]
    value = _template().invoke({
        "company": company, "language": language, "intent": intent or "unknown",
        "knowledge": _knowledge_block(sources), "history": lc_history, "question": question,
    })
    return [ChatMessage(role=_ROLES[type(m)], content=str(m.content)) for m in value.to_messages()]  # type: ignore[arg-type]
