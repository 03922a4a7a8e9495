"""Deciding how to answer a turn, and keeping the transcript and state. No FastAPI here.

Per turn, in order: a handed-off conversation gets no bot answer; handoff triggers (explicit request,
sensitive topic, a streak of frustration); a likely prompt injection gets a template, never the LLM; an
active flow takes the message as its slot answer; small talk is answered from templates; an intent that
starts a flow starts it; everything else is answered by the LLM from knowledge-base passages (after too many
unsure turns without a passage, a person takes over).

Degraded, not dead: when nlp is down or too slow the turn is answered from what dialogue reads of the message
itself (`fallback`: no intent, words-only knowledge search); when the llm service is down, dialogue builds the
offline answer from the same passages and templates. Such replies say so (`degraded`, `degraded_reasons`).

Within the turn's deadline (`supportbot.deadline`): nlp gets at most `NLP_SHARE` of what is left, the llm
service what is left less DIALOGUE_LLM_RESERVE_S (kept for the offline answer and storing the turn), so a hanging llm
still ends in an answer before the gateway gives up. A turn finished after its caller left (the deadline
passed, or the client disconnected) is stored marked `caller_gone`; a retry of it is replayed, not redone.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dialogue import storage
from services.dialogue.fallback import (
    LLM_UNAVAILABLE,
    NLP_TIMEOUT,
    NLP_UNAVAILABLE,
    analysis_without_nlp,
    asks_for_person,
    made_without_nlp,
)
from services.dialogue.flows import ConfigLibrary, DialogueConfig, Flow, Slot, pick
from services.dialogue.kb import KnowledgeLibrary
from services.dialogue.knowledge import KnowledgeRetriever, as_sources
from services.dialogue.prompts import build_messages
from services.dialogue.state import ConversationState, StateStore
from services.dialogue.storage import MessageRow
from services.dialogue.tools import ToolError, ToolRunner
from supportbot import deadline
from supportbot.contracts.admin import (
    ConversationErased,
    ConversationPage,
    ConversationSummary,
    decode_cursor,
    encode_cursor,
)
from supportbot.contracts.common import Source
from supportbot.contracts.dialogue import (
    Conversation,
    Reply,
    Transcript,
    TranscriptMessage,
    TurnRequest,
    TurnResponse,
    WidgetAccess,
)
from supportbot.contracts.llm import (
    ChatMessage,
    GenerateRequest,
    GenerateResponse,
    GenerationContext,
    ToolFunction,
    ToolSpec,
    Usage,
)
from supportbot.contracts.nlp import AnalyzeRequest, AnalyzeResponse
from supportbot.crypto import TranscriptCipher, Undecryptable
from supportbot.db import transaction, utcnow
from supportbot.errors import Conflict, DownstreamError, DownstreamTimeout, NotFound
from supportbot.http import ServiceClient
from supportbot.offline_answer import OFFLINE_PROVIDER, offline_answer
from supportbot.pii import redact
from supportbot.resources import SUPPORTED_REPLY_LANGUAGES, reply
from supportbot.settings import DialogueSettings
from supportbot.tenancy import Tenant, TenantDirectory

log = logging.getLogger(__name__)

SMALL_TALK = frozenset({"greeting", "thanks", "goodbye"})
MAX_TOOL_ROUNDS = 3
HANDOFF_INTENT = "human_agent"
NLP_SHARE = 0.25
"""The part of a turn's remaining time an analysis may take (besides NLP_TIMEOUT_S)."""

CallerGone = Callable[[], Awaitable[bool]]
"""Whether the client that sent the turn has disconnected."""


@dataclass
class Decision:
    text: str
    provider: str
    handoff_reason: str | None = None
    sources: list[Source] = field(default_factory=list)
    degraded_reasons: list[str] = field(default_factory=list)
    usage: Usage | None = None
    """The LLM tokens spent on it, when the LLM was asked."""


class DialogueService:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], nlp: ServiceClient, llm: ServiceClient,
                 knowledge: KnowledgeLibrary, configs: ConfigLibrary, state: StateStore, tools: ToolRunner,
                 settings: DialogueSettings, tenants: TenantDirectory,
                 cipher: TranscriptCipher | None = None) -> None:
        """`tenants`: every call names a tenant, which must exist (404 otherwise); `cipher`: encrypts the
        originals of tenants that keep them (TRANSCRIPT_KEYS); None: none are kept."""
        self.sessions = sessions
        self.tenants = tenants
        self.nlp = nlp
        self.llm = llm
        self.knowledge = knowledge
        self.configs = configs
        self.state = state
        self.tools = tools
        self.settings = settings
        self.cipher = cipher
        self._originals_unkept: set[str] = set()
        """Tenants that opted in to originals while no key is set: warned about once per process."""

    async def create_conversation(self, *, tenant_id: str, channel: str, created_by_key: str | None = None,
                                  token_hash: str | None = None) -> Conversation:
        await self.tenants.require(tenant_id)
        async with transaction(self.sessions) as session:
            row = await storage.create_conversation(session, tenant_id=tenant_id, channel=channel,
                                                    created_by_key=created_by_key, token_hash=token_hash)
        return Conversation(id=row.id, tenant_id=row.tenant_id, channel=row.channel, handoff=row.handoff,
                            created_at=row.created_at)

    async def transcript(self, *, tenant_id: str, conversation_id: str, widget: WidgetAccess | None = None,
                         originals: bool = False) -> Transcript:
        """The stored (redacted) transcript; with `originals`, each message's decrypted original where one was
        kept (the caller checks that it may read them)."""
        await self.tenants.require(tenant_id)
        async with self.sessions() as session:
            await self._conversation(session, tenant_id, conversation_id, widget)
            rows = await storage.list_messages(session, conversation_id=conversation_id)
        return Transcript(conversation_id=conversation_id, messages=[
            TranscriptMessage(id=r.id, role=r.role, text=r.text, intent=r.intent, confidence=r.confidence,  # type: ignore[arg-type]
                              provider=r.provider, created_at=r.created_at,
                              original=self._original_of(r) if originals else None) for r in rows])

    def _original_of(self, row: MessageRow) -> str | None:
        if row.original_encrypted is None:
            return None
        if self.cipher is not None:
            try:
                return self.cipher.decrypt(row.original_encrypted)
            except Undecryptable:
                pass
        log.warning("an original is kept under a key TRANSCRIPT_KEYS no longer holds", extra={
            "supportbot.message_id": row.id})
        return None

    async def list_conversations(self, *, tenant_id: str, limit: int, cursor: str | None = None,
                                 channel: str | None = None, handoff: bool | None = None,
                                 created_after: datetime | None = None,
                                 created_before: datetime | None = None) -> ConversationPage:
        """A page of the tenant's conversations, newest first; `cursor` is the previous page's `next_cursor`."""
        await self.tenants.require(tenant_id)
        async with self.sessions() as session:
            rows = await storage.list_conversations(
                session, tenant_id=tenant_id, limit=limit + 1, after=decode_cursor(cursor) if cursor else None,
                channel=channel, handoff=handoff, created_after=created_after, created_before=created_before)
        page = rows[:limit]
        last = page[-1][0] if page else None
        return ConversationPage(
            items=[ConversationSummary(id=row.id, channel=row.channel, handoff=row.handoff,
                                       created_at=row.created_at, message_count=count, last_message_at=newest)
                   for row, count, newest in page],
            next_cursor=encode_cursor(last.created_at, last.id) if last is not None and len(rows) > limit else None)

    async def erase_conversation(self, *, tenant_id: str, conversation_id: str) -> ConversationErased:
        """Delete the conversation's messages, row and state (its LLM data is llm's to erase).

        Under the conversation's lock, so a turn in progress ends first (its LLM calls, cache entries and usage
        included) and no turn starts until the row is gone. The state goes first: a failure after it leaves
        the conversation in place, so a retried erase still finds it and finishes."""
        await self.tenants.require(tenant_id)
        async with self.state.locked(conversation_id):
            async with self.sessions() as session:
                await self._conversation(session, tenant_id, conversation_id)
            await self.state.forget(conversation_id)
            async with transaction(self.sessions) as session:
                messages = await storage.erase_conversation(session, tenant_id=tenant_id,
                                                            conversation_id=conversation_id)
        if messages is None:  # erased by a concurrent request meanwhile
            raise NotFound(f"conversation {conversation_id} not found", field="conversation_id")
        log.info("conversation erased", extra={"supportbot.tenant": tenant_id, "supportbot.messages": messages})
        return ConversationErased(conversation_id=conversation_id, messages=messages)

    async def handle_turn(self, turn: TurnRequest, *, disconnected: CallerGone | None = None) -> TurnResponse:
        """Process one customer message; messages of a conversation go through here one at a time."""
        await self.tenants.require(turn.tenant_id)
        async with self.state.locked(turn.conversation_id):
            return await self._handle_locked(turn, disconnected)

    async def _handle_locked(self, turn: TurnRequest, disconnected: CallerGone | None = None) -> TurnResponse:
        started = time.perf_counter()
        async with self.sessions() as session:
            conversation = await self._conversation(session, turn.tenant_id, turn.conversation_id, turn.widget)
            if turn.client_message_id and (earlier := await storage.find_reply_to(
                    session, conversation_id=conversation.id, client_message_id=turn.client_message_id)):
                await self._check_same_message(session, turn)
                return _replay(earlier)
            keep_originals = await self._keeps_originals(session, turn.tenant_id)
            history = await storage.list_messages(session, conversation_id=conversation.id,
                                                  last=self.settings.history_turns * 2)
        state = await self.state.load(turn.conversation_id)
        analysis, nlp_problem = await self._analyze(turn, previous_language=state.language)
        language = analysis.language if analysis.language in SUPPORTED_REPLY_LANGUAGES else "en"
        state.turn_count += 1
        state.language = language
        decision: Decision | None
        if conversation.handoff:
            decision = None  # a person has taken over: store the message, stay silent
        else:
            config = self.configs.for_tenant(turn.tenant_id)
            decision = await self._decide(turn, analysis, language, state, config,
                                          [(m.role, redact(m.text)[0]) for m in history])
        handoff_reason = "handed_off" if decision is None else decision.handoff_reason
        state.handoff = handoff_reason is not None
        reasons = [*([nlp_problem] if nlp_problem else []), *(decision.degraded_reasons if decision else [])]
        response = TurnResponse(
            conversation_id=turn.conversation_id, message_id=0,
            reply=Reply(text=decision.text, language=language) if decision else None,
            intent=None if nlp_problem else analysis.intent, out_of_scope=analysis.out_of_scope,
            handoff=state.handoff, handoff_reason=handoff_reason, flow=state.flow,
            sources=decision.sources if decision else [], provider=decision.provider if decision else None,
            degraded=bool(reasons), degraded_reasons=reasons, usage=decision.usage if decision else None)
        response = await self._store(turn, response, (time.perf_counter() - started) * 1000,
                                     newly_handed_off=state.handoff and not conversation.handoff,
                                     keep_originals=keep_originals,
                                     caller_gone=await _caller_gone(turn, disconnected))
        await self.state.save(turn.conversation_id, state)
        log.info("turn handled", extra={"supportbot.intent": response.intent.name if response.intent else None,
                                        "supportbot.provider": response.provider,
                                        "supportbot.flow": state.flow,
                                        "supportbot.handoff_reason": handoff_reason,
                                        "supportbot.degraded_reasons": reasons})
        return response

    async def _analyze(self, turn: TurnRequest, *, previous_language: str) -> tuple[AnalyzeResponse, str | None]:
        """nlp's analysis, or dialogue's own when nlp is down or too slow, with the reason (a 4xx is raised)."""
        try:
            analysis = await self.nlp.post("/v1/analyze", AnalyzeRequest(text=turn.text, tenant_id=turn.tenant_id),
                                           AnalyzeResponse, time_limit_s=_share(NLP_SHARE))
            return analysis, None
        except DownstreamError as exc:
            reason = NLP_TIMEOUT if isinstance(exc, DownstreamTimeout) else NLP_UNAVAILABLE
            # The reason and nlp's error, never the customer's text.
            log.warning("nlp unavailable, turn answered without it",
                        extra={"supportbot.reason": reason, "supportbot.error": exc.message,
                               "supportbot.tenant": turn.tenant_id})
            return analysis_without_nlp(turn.text, previous_language=previous_language), reason

    async def _keeps_originals(self, session: AsyncSession, tenant_id: str) -> bool:
        """Whether the tenant's originals are kept: it opted in and a key is set (else warned about, once)."""
        tenant = await session.get(Tenant, tenant_id)
        if tenant is None or not tenant.keep_originals:
            return False
        if self.cipher is None:
            if tenant_id not in self._originals_unkept:
                self._originals_unkept.add(tenant_id)
                log.warning("the tenant keeps originals but TRANSCRIPT_KEYS is unset: only redacted text is stored",
                            extra={"supportbot.tenant": tenant_id})
            return False
        return True

    async def _check_same_message(self, session: AsyncSession, turn: TurnRequest) -> None:
        """409 when a client message id comes again with another text than the one delivered under it.

        Compared with the kept original where there is one, else with the stored redacted text: then two texts
        that differ only inside a redacted value (another card number) count as the same message."""
        assert turn.client_message_id is not None
        sent = await storage.find_customer_message(session, conversation_id=turn.conversation_id,
                                                   client_message_id=turn.client_message_id)
        if sent is None:
            return
        original = self._original_of(sent) if sent.original_encrypted is not None else None
        same = original == turn.text if original is not None else sent.text == redact(turn.text)[0]
        if not same:
            raise Conflict(f"client_message_id {turn.client_message_id!r} was already used in this conversation for "
                           "another message; a new message needs a new id (the same id is for retrying the same "
                           "message)", field="client_message_id")

    def _original(self, text: str, stored: str, keep: bool) -> str | None:
        """The encrypted original to keep beside the stored text: only when redaction changed something."""
        if not keep or self.cipher is None or stored == text:
            return None
        return self.cipher.encrypt(text)

    async def _store(self, turn: TurnRequest, response: TurnResponse, latency_ms: float, *,
                     newly_handed_off: bool, keep_originals: bool = False,
                     caller_gone: bool = False) -> TurnResponse:
        """Store the turn with personal data redacted (the originals encrypted, if kept); the response returned
        is the live one, the one stored for replays holds the redacted reply."""
        intent = response.intent
        customer_text = redact(turn.text)[0]
        try:
            async with transaction(self.sessions) as session:
                customer = await storage.add_message(session, MessageRow(
                    conversation_id=turn.conversation_id, role="customer", text=customer_text,
                    original_encrypted=self._original(turn.text, customer_text, keep_originals),
                    intent=intent.name if intent else None, confidence=intent.confidence if intent else None,
                    client_message_id=turn.client_message_id, caller_gone=caller_gone, created_at=utcnow()))
                if response.reply is None:
                    response = response.model_copy(update={"message_id": customer.id})
                    customer.response_json = response.model_dump_json()
                else:
                    # A reply may echo what the customer typed (a flow's template, the LLM's wording).
                    reply_text = redact(response.reply.text)[0]
                    bot = await storage.add_message(session, MessageRow(
                        conversation_id=turn.conversation_id, role="bot", text=reply_text,
                        original_encrypted=self._original(response.reply.text, reply_text, keep_originals),
                        provider=response.provider, latency_ms=latency_ms,
                        client_message_id=turn.client_message_id, caller_gone=caller_gone, created_at=utcnow()))
                    response = response.model_copy(update={"message_id": bot.id})
                    stored_reply = response.reply.model_copy(update={"text": reply_text})
                    bot.response_json = response.model_copy(update={"reply": stored_reply}).model_dump_json()
                if newly_handed_off:
                    await storage.set_handoff(session, conversation_id=turn.conversation_id)
        except IntegrityError as exc:  # the same delivery, stored by another replica that lost its lock
            raise Conflict("this message was already processed", field="client_message_id") from exc
        return response

    async def _decide(self, turn: TurnRequest, analysis: AnalyzeResponse, language: str,
                      state: ConversationState, config: DialogueConfig, history: list[tuple[str, str]]) -> Decision:
        rules = config.handoff
        intent, confidence = analysis.intent.name, analysis.intent.confidence
        # Without nlp there is no intent or sentiment: a plain request for a person is read from the words,
        # and the turn moves neither the frustration nor the low-confidence streak.
        understood = not made_without_nlp(analysis)
        lowered = turn.text.lower()
        if (intent == HANDOFF_INTENT and confidence >= self.settings.handoff_min_confidence
                or not understood and asks_for_person(turn.text)):
            return self._handoff(state, "human_agent", "requested", language)
        if intent in rules.sensitive_intents or any(topic.lower() in lowered for topic in rules.sensitive_topics):
            return self._handoff(state, "handoff_sensitive", "sensitive_topic", language)
        if understood:
            frustrated = analysis.sentiment.frustration >= rules.frustration_threshold
            state.negative_streak = state.negative_streak + 1 if frustrated else 0
            if state.negative_streak >= rules.frustrated_turns:
                return self._handoff(state, "handoff_frustrated", "frustration", language)
        if analysis.injection_score >= config.guardrails.injection_threshold:
            # Neither the LLM nor a tool sees it; the customer is asked what they need. No text in the log.
            log.warning("prompt injection suspected, message not sent to the LLM",
                        extra={"supportbot.injection_score": analysis.injection_score,
                               "supportbot.tenant": turn.tenant_id})
            return Decision(_template("injection_refused", language), "template")

        if state.flow and (flow := config.flows.get(state.flow)):
            if not _leaves_flow(flow, state, analysis, turn.text):
                return await self._continue_flow(turn, analysis, language, state, config, flow)
            state.flow, state.slots, state.slot_attempts = None, {}, 0

        if intent in SMALL_TALK and confidence >= self.settings.small_talk_min_confidence:
            state.low_confidence_streak = 0
            return Decision(_template(intent, language), "template")
        unsure = analysis.out_of_scope or confidence < rules.low_confidence_threshold
        if not unsure and (match := config.flow_for_intent(intent)):
            state.flow, state.slots, state.slot_attempts = match[0], {}, 0
            state.low_confidence_streak = 0
            return await self._continue_flow(turn, analysis, language, state, config, match[1], first=True)

        # Embeddings (of a new index, of the question) get a share of the turn's time, as an analysis does;
        # without them the search is by words.
        with deadline.within(_share(NLP_SHARE)):
            knowledge = await self.knowledge.for_tenant(turn.tenant_id)
            # The encoder is an English model: semantic matching only for English questions (and only from nlp).
            query_vector = None
            if (understood and knowledge.vectors is not None and analysis.language == "en"
                    and self.knowledge.embedder is not None):
                embedded = await self.knowledge.embedder([turn.text])
                query_vector = embedded[0] if embedded is not None else None
        retriever = KnowledgeRetriever(knowledge=knowledge, query_vector=query_vector)
        sources = as_sources(await retriever.ainvoke(turn.text))
        if understood:
            state.low_confidence_streak = state.low_confidence_streak + 1 if unsure and not sources else 0
            if state.low_confidence_streak >= rules.low_confidence_turns:
                return self._handoff(state, "handoff_low_confidence", "low_confidence", language)
        try:
            generated = await self._generate(turn, analysis, language, history, sources, config)
        except ToolError as exc:
            log.warning("tool failed", extra={"supportbot.reason": exc.reason})
            return Decision(_template("tool_failed", language), "template")
        except DownstreamError as exc:
            # Also when a tool flow loses the LLM half-way: the offline answer never improvises on a result.
            _log_llm_down(turn, exc)
            context = GenerationContext(intent=_prompt_intent(analysis), language=language, knowledge=sources)
            return Decision(offline_answer(context), OFFLINE_PROVIDER, sources=sources,
                            degraded_reasons=[LLM_UNAVAILABLE])
        return Decision(generated.text, generated.provider, sources=sources, usage=generated.usage,
                        degraded_reasons=_llm_degraded(generated))

    async def _continue_flow(self, turn: TurnRequest, analysis: AnalyzeResponse, language: str,
                             state: ConversationState, config: DialogueConfig, flow: Flow, *,
                             first: bool = False) -> Decision:
        """Fill the flow's slots from this message, ask for what is missing, then run the action."""
        for slot in flow.slots:
            if slot.name in state.slots:
                continue
            value = _slot_value(slot, analysis, turn.text)
            if value is not None:
                state.slots[slot.name] = value
                state.slot_attempts = 0
                continue
            if first:  # the message that started the flow need not contain the slot yet
                return Decision(pick(slot.prompt, language), "flow")
            state.slot_attempts += 1
            if state.slot_attempts >= slot.max_attempts:
                return self._handoff(state, "slot_give_up", "slot_failed", language)
            return Decision(pick(slot.reprompt, language), "flow")
        return await self._complete_flow(turn, analysis, language, state, config, flow)

    async def _complete_flow(self, turn: TurnRequest, analysis: AnalyzeResponse, language: str,
                             state: ConversationState, config: DialogueConfig, flow: Flow) -> Decision:
        values: dict[str, object] = dict(state.slots)
        name = state.flow
        state.flow, state.slots, state.slot_attempts = None, {}, 0
        if flow.action:
            try:
                values |= await self.tools.run(flow.action, config.tools[flow.action], dict(values),
                                               allowed_hosts=config.allowed_hosts)
            except ToolError as exc:
                log.warning("tool failed", extra={"supportbot.tool": flow.action, "supportbot.reason": exc.reason})
                return Decision(_template("tool_failed", language), "template")
        if flow.reply == "template" and flow.template:
            text = pick(flow.template, language).format_map(defaultdict(lambda: "n/a", values))
            return Decision(text, "flow")
        # The hosted LLM sees placeholders for the slots' and the tool's personal data too.
        result = Source(title=f"{name} result", path=f"action:{flow.action or name}",
                        snippet=redact(json.dumps(values, ensure_ascii=False))[0][:800])
        try:
            generated = await self._generate(turn, analysis, language, [], [result])
        except DownstreamError as exc:
            # The LLM would have phrased the result: the flow's template says it instead, or a person is offered.
            _log_llm_down(turn, exc)
            if flow.template:
                text = pick(flow.template, language).format_map(defaultdict(lambda: "n/a", values))
                return Decision(text, "flow", degraded_reasons=[LLM_UNAVAILABLE])
            return Decision(offline_answer(GenerationContext(language=language)), OFFLINE_PROVIDER,
                            degraded_reasons=[LLM_UNAVAILABLE])
        return Decision(generated.text, generated.provider, usage=generated.usage,
                        degraded_reasons=_llm_degraded(generated))

    async def _generate(self, turn: TurnRequest, analysis: AnalyzeResponse, language: str,
                        history: list[tuple[str, str]], sources: list[Source],
                        config: DialogueConfig | None = None) -> GenerateResponse:
        """Ask the LLM, offering the tenant's tools (OpenAI function calling); raises ToolError if one fails.

        The three-step call: the model picks a tool, we run it (validated, allow-listed, with a timeout),
        and the model answers from its result. A failing tool is never handed back to the model to improvise
        on: the caller apologises and offers a person. The answer's `usage` is what all the rounds spent.
        """
        intent = _prompt_intent(analysis)
        # The hosted LLM sees typed placeholders ([EMAIL], [CARD], ...) instead of personal data.
        messages = build_messages(question=analysis.redacted_text, history=history, sources=sources, intent=intent,
                                  language=language, company=self.settings.company_name)
        offered = {name: tool for name, tool in (config.tools.items() if config else []) if tool.available}
        request = GenerateRequest(
            tenant_id=turn.tenant_id, conversation_id=turn.conversation_id, messages=messages,
            context=GenerationContext(intent=intent, language=language, knowledge=sources), temperature=0.0,
            tools=[ToolSpec(function=ToolFunction(name=name, description=tool.description,
                                                  parameters=tool.parameters)) for name, tool in offered.items()]
            or None)
        spent = Usage(prompt_tokens=0, completion_tokens=0)  # over every round; a cached answer costs none
        for _ in range(MAX_TOOL_ROUNDS):
            # Raises DownstreamError when the llm service is down (the caller answers offline); a 4xx such as
            # an exceeded budget is not an outage and reaches the customer as it is.
            generated = await self.llm.post("/v1/generate", request, GenerateResponse,
                                            time_limit_s=_left_after(self.settings.llm_reserve_s))
            if not generated.cached:
                spent = Usage(prompt_tokens=spent.prompt_tokens + generated.usage.prompt_tokens,
                              completion_tokens=spent.completion_tokens + generated.usage.completion_tokens)
            if not generated.tool_calls:
                return generated.model_copy(update={"usage": spent})
            assert config is not None
            messages = [*request.messages, ChatMessage(role="assistant", tool_calls=generated.tool_calls)]
            for call in generated.tool_calls:
                tool = offered.get(call.function.name)
                if tool is None:
                    raise ToolError("unknown_tool")
                try:
                    arguments = json.loads(call.function.arguments or "{}")
                except ValueError as exc:
                    raise ToolError("invalid_arguments") from exc
                if not isinstance(arguments, dict):
                    raise ToolError("invalid_arguments")
                result = await self.tools.run(call.function.name, tool, arguments,
                                              allowed_hosts=config.allowed_hosts)
                messages.append(ChatMessage(role="tool", tool_call_id=call.id,
                                            content=redact(json.dumps(result, ensure_ascii=False))[0]))
            request = request.model_copy(update={"messages": messages})
        raise ToolError("too_many_tool_calls")

    @staticmethod
    def _handoff(state: ConversationState, template: str, reason: str, language: str) -> Decision:
        state.flow, state.slots, state.slot_attempts = None, {}, 0
        return Decision(_template(template, language), "template", handoff_reason=reason)

    @staticmethod
    async def _conversation(session: AsyncSession, tenant_id: str, conversation_id: str,
                            widget: WidgetAccess | None = None) -> storage.ConversationRow:
        row = await storage.get_conversation(session, tenant_id=tenant_id, conversation_id=conversation_id,
                                             widget=widget)
        if row is None:
            raise NotFound(f"conversation {conversation_id} not found", field="conversation_id")
        return row


def _leaves_flow(flow: Flow, state: ConversationState, analysis: AnalyzeResponse, text: str) -> bool:
    """A confident, different request that does not carry the awaited slot value ends the flow."""
    intent = analysis.intent
    if analysis.out_of_scope or intent.name in flow.intents or intent.name in SMALL_TALK or intent.confidence < 0.8:
        return False
    pending = next((slot for slot in flow.slots if slot.name not in state.slots), None)
    return pending is None or _slot_value(pending, analysis, text) is None


def _slot_value(slot: Slot, analysis: AnalyzeResponse, text: str) -> str | None:
    """The slot's value in this message: a matching entity first, else the whole message if it fits."""
    candidates = []
    if slot.entity:
        for entity in analysis.entities:
            if entity.type == slot.entity:
                candidates += [entity.value, entity.normalized or entity.value]
    candidates.append(text.strip())
    for candidate in candidates:
        if slot.pattern is None or re.fullmatch(slot.pattern, candidate, flags=re.IGNORECASE):
            if slot.pattern is None and candidate == text.strip() and slot.entity:
                continue  # an entity slot without a pattern needs the entity itself
            return candidate
    return None


def _prompt_intent(analysis: AnalyzeResponse) -> str | None:
    """The intent the LLM is told: none when out of scope or when nlp could not be asked."""
    return None if analysis.out_of_scope or made_without_nlp(analysis) else analysis.intent.name


def _share(part: float) -> float | None:
    """`part` of the turn's remaining time (None: the turn has no deadline)."""
    left = deadline.remaining_s()
    return None if left is None else max(0.0, left) * part


def _left_after(reserve_s: float) -> float | None:
    """The turn's remaining time less `reserve_s` (None: the turn has no deadline)."""
    left = deadline.remaining_s()
    return None if left is None else left - reserve_s


def _llm_degraded(generated: GenerateResponse) -> list[str]:
    """The llm service answered with its offline responder because its providers failed: say so."""
    return [LLM_UNAVAILABLE] if generated.provider == OFFLINE_PROVIDER and generated.failover_reason else []


async def _caller_gone(turn: TurnRequest, disconnected: CallerGone | None) -> bool:
    """Whether nobody will receive this turn's answer: its deadline passed or its client disconnected."""
    gone = deadline.caller_gone() or (disconnected is not None and await disconnected())
    if gone:
        log.info("the caller left before the answer; stored for its retry",
                 extra={"supportbot.tenant": turn.tenant_id})
    return gone


def _log_llm_down(turn: TurnRequest, exc: DownstreamError) -> None:
    log.warning("llm unavailable, offline answer made in dialogue",
                extra={"supportbot.reason": LLM_UNAVAILABLE, "supportbot.error": exc.message,
                       "supportbot.tenant": turn.tenant_id})


def _replay(bot: MessageRow) -> TurnResponse:
    stored = TurnResponse.model_validate_json(bot.response_json or "{}")
    return stored.model_copy(update={"duplicate": True})


def _template(key: str, language: str) -> str:
    text = reply(key, language)
    if text is None:
        raise KeyError(f"responses.yaml has no template {key!r}")
    return text
