"""Deciding how to answer a turn, and keeping the transcript. No FastAPI here."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dialogue import storage
from services.dialogue.knowledge import KnowledgeBase
from services.dialogue.prompts import build_messages
from services.dialogue.storage import MessageRow
from supportbot.contracts.common import Intent, Source
from supportbot.contracts.dialogue import Conversation, Reply, Transcript, TranscriptMessage, TurnRequest, TurnResponse
from supportbot.contracts.llm import GenerateRequest, GenerateResponse, GenerationContext
from supportbot.contracts.nlp import AnalyzeRequest, AnalyzeResponse
from supportbot.db import transaction, utcnow
from supportbot.errors import NotFound
from supportbot.http import ServiceClient
from supportbot.pii import redact
from supportbot.resources import SUPPORTED_REPLY_LANGUAGES, reply
from supportbot.settings import DialogueSettings

log = logging.getLogger(__name__)

SMALL_TALK = frozenset({"greeting", "thanks", "goodbye"})
HANDOFF_INTENT = "human_agent"


@dataclass
class Decision:
    text: str
    provider: str
    handoff: bool = False
    sources: list[Source] | None = None


class DialogueService:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], nlp: ServiceClient, llm: ServiceClient,
                 knowledge: KnowledgeBase, settings: DialogueSettings) -> None:
        self.sessions = sessions
        self.nlp = nlp
        self.llm = llm
        self.knowledge = knowledge
        self.settings = settings

    async def create_conversation(self, *, tenant_id: str, channel: str) -> Conversation:
        async with transaction(self.sessions) as session:
            row = await storage.create_conversation(session, tenant_id=tenant_id, channel=channel)
        return Conversation(id=row.id, tenant_id=row.tenant_id, channel=row.channel, handoff=row.handoff,
                            created_at=row.created_at)

    async def transcript(self, *, tenant_id: str, conversation_id: str) -> Transcript:
        async with self.sessions() as session:
            await self._conversation(session, tenant_id, conversation_id)
            rows = await storage.list_messages(session, conversation_id=conversation_id)
        return Transcript(conversation_id=conversation_id, messages=[
            TranscriptMessage(id=r.id, role=r.role, text=r.text, intent=r.intent, confidence=r.confidence,  # type: ignore[arg-type]
                              provider=r.provider, created_at=r.created_at) for r in rows])

    async def handle_turn(self, turn: TurnRequest) -> TurnResponse:
        started = time.perf_counter()
        async with self.sessions() as session:
            conversation = await self._conversation(session, turn.tenant_id, turn.conversation_id)
            history = await storage.list_messages(session, conversation_id=conversation.id,
                                                  last=self.settings.history_turns * 2)
        analysis = await self.nlp.post("/v1/analyze", AnalyzeRequest(text=turn.text, tenant_id=turn.tenant_id),
                                       AnalyzeResponse)
        language = analysis.language if analysis.language in SUPPORTED_REPLY_LANGUAGES else "en"
        if conversation.handoff:
            decision = Decision(_template("handoff_stopped", language), "template", handoff=True)
        else:
            decision = await self._decide(turn, analysis, language, [(m.role, redact(m.text)[0]) for m in history])
        latency_ms = (time.perf_counter() - started) * 1000
        async with transaction(self.sessions) as session:
            await storage.add_message(session, MessageRow(
                conversation_id=turn.conversation_id, role="customer", text=turn.text,
                intent=analysis.intent.name, confidence=analysis.intent.confidence, created_at=utcnow()))
            bot = await storage.add_message(session, MessageRow(
                conversation_id=turn.conversation_id, role="bot", text=decision.text, provider=decision.provider,
                latency_ms=latency_ms, created_at=utcnow()))
            if decision.handoff and not conversation.handoff:
                await storage.set_handoff(session, conversation_id=turn.conversation_id)
        log.info("turn handled", extra={"supportbot.intent": analysis.intent.name,
                                        "supportbot.provider": decision.provider,
                                        "supportbot.handoff": decision.handoff})
        return TurnResponse(
            conversation_id=turn.conversation_id, message_id=bot.id,
            reply=Reply(text=decision.text, language=language), intent=analysis.intent,
            out_of_scope=analysis.out_of_scope, handoff=decision.handoff, sources=decision.sources or [],
            provider=decision.provider,
        )

    async def _decide(self, turn: TurnRequest, analysis: AnalyzeResponse, language: str,
                      history: list[tuple[str, str]]) -> Decision:
        intent: Intent = analysis.intent
        if intent.name == HANDOFF_INTENT and intent.confidence >= self.settings.handoff_min_confidence:
            return Decision(_template(HANDOFF_INTENT, language), "template", handoff=True)
        if intent.name in SMALL_TALK and intent.confidence >= self.settings.small_talk_min_confidence:
            return Decision(_template(intent.name, language), "template")
        sources = self.knowledge.search(turn.text)
        # The hosted LLM sees typed placeholders ([EMAIL], [CARD], ...) instead of personal data.
        messages = build_messages(question=analysis.redacted_text, history=history, sources=sources,
                                  intent=None if analysis.out_of_scope else intent.name, language=language,
                                  company=self.settings.company_name)
        generated = await self.llm.post("/v1/generate", GenerateRequest(
            tenant_id=turn.tenant_id, conversation_id=turn.conversation_id, messages=messages,
            context=GenerationContext(intent=None if analysis.out_of_scope else intent.name, language=language,
                                      knowledge=sources),
            temperature=0.0,
        ), GenerateResponse)
        return Decision(generated.text, generated.provider, sources=sources)

    @staticmethod
    async def _conversation(session: AsyncSession, tenant_id: str, conversation_id: str) -> storage.ConversationRow:
        row = await storage.get_conversation(session, tenant_id=tenant_id, conversation_id=conversation_id)
        if row is None:
            raise NotFound(f"conversation {conversation_id} not found", field="conversation_id")
        return row


def _template(key: str, language: str) -> str:
    text = reply(key, language)
    if text is None:
        raise KeyError(f"responses.yaml has no template {key!r}")
    return text
