"""Dialogue decisions through the stack: templates, knowledge answers, handoff, Japanese, LLM grounding."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fake_openai import FakeOpenAI
from tests.stack import in_process_stack

pytestmark = pytest.mark.anyio






async def test_small_talk_costs_no_llm_call(sqlite_url: str, data_dir: Path, model_cache_dir: Path,
                                            fake_openai: FakeOpenAI) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir,
                                openai_base_url=fake_openai.base_url, openai_api_key="sk-test") as stack:
        conversation_id = await stack.new_conversation()
        for text in ("hello", "thank you so much", "bye"):
            assert (await stack.say(conversation_id, text))["provider"] == "template"
    assert fake_openai.calls == 0


async def test_llm_gets_grounded_prompt_and_history(sqlite_url: str, data_dir: Path, model_cache_dir: Path,
                                                    fake_openai: FakeOpenAI) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir,
                                openai_base_url=fake_openai.base_url, openai_api_key="sk-test") as stack:
        conversation_id = await stack.new_conversation()
        await stack.say(conversation_id, "hi")
        answer = await stack.say(conversation_id, "How long does standard shipping take?")
    assert answer["provider"] == "openai"
    assert answer["reply"]["text"] == fake_openai.reply
    assert answer["sources"]
    messages = fake_openai.requests[-1]["messages"]
    assert messages[0]["role"] == "system"
    assert answer["sources"][0]["snippet"][:40] in messages[0]["content"], "the passages are in the prompt"
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user"]
    assert messages[-1]["content"] == "How long does standard shipping take?"


async def test_unknown_answer_offers_a_person_without_inventing(sqlite_url: str, data_dir: Path,
                                                                 model_cache_dir: Path) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        conversation_id = await stack.new_conversation()
        answer = await stack.say(conversation_id, "What is the boiling point of tungsten on Mars?")
    assert answer["sources"] == []
    assert answer["provider"] == "offline"
    text = answer["reply"]["text"].lower()
    assert "offline" in text and ("person" in text or "human" in text or "agent" in text or "team" in text)


async def test_handoff_stops_the_bot(database_url: str, data_dir: Path, model_cache_dir: Path) -> None:
    async with in_process_stack(database_url=database_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        conversation_id = await stack.new_conversation()
        handoff = await stack.say(conversation_id, "I want to speak to a human agent please")
        after = await stack.say(conversation_id, "How long does shipping take?")
    assert handoff["handoff"] is True and handoff["intent"]["name"] == "human_agent"
    assert after["handoff"] is True and after["reply"] is None and after["sources"] == []


async def test_japanese_gets_japanese_replies(sqlite_url: str, data_dir: Path, model_cache_dir: Path) -> None:
    async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir) as stack:
        conversation_id = await stack.new_conversation()
        greeting = await stack.say(conversation_id, "こんにちは")
        answer = await stack.say(conversation_id, "返品の方法を教えてください")
    assert greeting["reply"]["language"] == "ja" and greeting["intent"]["name"] == "greeting"
    assert any("\u3040" <= ch <= "\u30ff" for ch in greeting["reply"]["text"])
    assert answer["reply"]["language"] == "ja"
    assert any("\u3040" <= ch <= "\u30ff" for ch in answer["reply"]["text"])
