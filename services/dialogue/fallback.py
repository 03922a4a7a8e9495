"""Answering without nlp: what dialogue can tell of a message by itself, and when not to ask a service at all.

When nlp is down or too slow, a turn is still answered. Dialogue then knows only what cheap rules read from
the text: its PII (redacted with `supportbot.pii`, so the LLM still sees placeholders only), its reply
language (from the script), whether it plainly asks for a person or looks like a prompt injection. It has no
intent, entities or sentiment: the turn is answered from words-only knowledge search, the LLM and templates,
and it counts neither towards the low-confidence nor the frustration handoff.

`ShortCircuit` keeps a burst of turns from each waiting out the timeout of a service that hangs: after a
failure the service is skipped for a few seconds, then one call at a time tries it again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from supportbot.contracts.common import Intent
from supportbot.contracts.nlp import AnalyzeResponse, PiiSpan, Sentiment
from supportbot.errors import DownstreamError, DownstreamTimeout
from supportbot.http import DeadlinePassed, DownstreamRejected, ResponseT, ServiceClient
from supportbot.pii import redact
from supportbot.settings import CommonSettings
from supportbot.telemetry import instrument_client

NLP_UNAVAILABLE = "nlp_unavailable"
NLP_TIMEOUT = "nlp_timeout"
LLM_UNAVAILABLE = "llm_unavailable"

UNKNOWN_INTENT = "unknown"
WORDS_ONLY_MODEL = "dialogue-words-only"
"""The `model` of an analysis dialogue made itself."""

# Long enough that a burst of turns costs one timeout, short enough that a recovered service is used again
# within seconds.
SKIP_AFTER_FAILURE_S = 5.0
# Above the default guardrail threshold (0.7), below 1, which means "guardrail off", as nlp's scores do.
INJECTION_SIGNAL_SCORE = 0.9

_KANA = re.compile(r"[\u3040-\u30ff\uff66-\uff9f]")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_LETTER = re.compile(r"[^\W\d_]")
_CODE = re.compile(r"\S*\d\S*")  # order numbers, amounts, dates: no language in them

# An explicit request for a person: a verb of asking to be put through, then who to; or a message that is
# only "agent" / "a real person please". Precise rather than complete: nlp's intent model covers the rest.
_WHO = (r"(?:humans?|human beings?|(?:real|live|actual) (?:person|people|agent|human)|persons?|people|agents?|"
        r"representatives?|reps?|operators?|someone|somebody|staff|employees?|manager|supervisor|team member)")
_PERSON_REQUEST = re.compile(
    rf"\b(?:speak|talk|chat|connect|transfer|put me through|pass me|hand me|escalate|switch me)\b[^.?!]{{0,40}}?"
    rf"\b{_WHO}\b"
    rf"|\b(?:want|need|get me|give me|prefer)\b[^.?!]{{0,20}}?\b(?:an? )?(?:real |live |actual )?"
    rf"(?:human|person|agent|representative|operator)\b"
    rf"|\bnot (?:a|the|your) (?:bot|robot|machine)\b"
    rf"|^\W*(?:an? )?(?:real |live )?(?:human|person|agent|representative|operator)(?: agent)?"
    rf"(?:[\s,]+(?:please|pls|now))?\W*$"
    # 人 not after a kanji: 友人に話した ("I told a friend") is no request.
    r"|(?:(?<![\u3400-\u9fff])人間?|オペレーター?|担当者?|スタッフ|係の(?:人|方)|有人)(?:に|と|へ)[^。？！]{0,6}?"
    r"(?:つな|繋|代わ|替わ|変わ|話|相談|対応|チャット)"
    r"|(?:人間|オペレーター?|担当者|スタッフ|有人)(?:を|で|の?対応を?)?(?:お願い|希望|がいい)",
    re.IGNORECASE)

# The commonest override and extraction phrasings. nlp's detector knows many more techniques; these only keep
# the plainest attacks from the LLM while it cannot be asked.
_INJECTION = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass)\b[^.?!]{0,30}?\b(?:instructions?|prompts?|rules|guidelines|"
    r"guardrails|directives|programming)\b"
    r"|\b(?:system|developer|hidden|initial) (?:prompt|message|instructions)\b"
    r"|\b(?:reveal|print|show|repeat|output)\b[^.?!]{0,20}?\b(?:your|the) (?:instructions|prompt|rules)\b"
    r"|\byou are now\b|\bdeveloper mode\b|\bjailbreak|\bdo anything now\b"
    r"|<\|(?:im_start|im_end|system|endoftext)\|>|\[/?INST\]"
    r"|(?:指示|命令|ルール|プロンプト|設定)を(?:すべて|全て)?(?:無視|忘れ)|システムプロンプト",
    re.IGNORECASE)


def reply_language(text: str, previous: str = "en") -> str:
    """"ja" for text written mostly in Japanese script, "en" otherwise, `previous` for text without words
    (a reply of "ORD-48213" or "2" keeps the conversation's language)."""
    if _KANA.search(text):
        return "ja"
    words = _CODE.sub(" ", text)
    han = len(_HAN.findall(words))
    if han and han >= len(_LATIN.findall(words)):
        return "ja"
    if not _LETTER.search(words):
        return previous
    return "en"


def asks_for_person(text: str) -> bool:
    """Whether the message plainly asks to talk to a person."""
    return _PERSON_REQUEST.search(text) is not None


def injection_signal(text: str) -> float:
    """A prompt-injection score from the plainest phrasings only: `INJECTION_SIGNAL_SCORE` or 0."""
    return INJECTION_SIGNAL_SCORE if _INJECTION.search(text) else 0.0


def made_without_nlp(analysis: AnalyzeResponse) -> bool:
    """Whether `analysis` is dialogue's own (nlp could not be asked): its intent then means nothing."""
    return analysis.model == WORDS_ONLY_MODEL


def analysis_without_nlp(text: str, *, previous_language: str = "en") -> AnalyzeResponse:
    """What dialogue knows of `text` by itself, in the shape nlp answers: no intent, entities or sentiment."""
    redacted, spans = redact(text)
    return AnalyzeResponse(
        intent=Intent(name=UNKNOWN_INTENT, confidence=0.0), out_of_scope=False,
        sentiment=Sentiment(score=0.0, label="neutral", frustration=0.0),
        language=reply_language(text, previous_language),
        pii=[PiiSpan(type=s.type, start=s.start, end=s.end) for s in spans], redacted_text=redacted,
        injection_score=injection_signal(text), model=WORDS_ONLY_MODEL)


class ShortCircuit:
    """Skips a downstream for `skip_s` seconds after it failed, then lets one call at a time try it again.

    Used from one event loop (no locks). A failure that was a timeout is reported again as a timeout while
    skipping, so the turns in a burst all give the same reason.
    """

    def __init__(self, name: str, *, skip_s: float = SKIP_AFTER_FAILURE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.skip_s = skip_s
        self.clock = clock
        self._skip_until: float | None = None  # None: the downstream answered last time
        self._timed_out = False
        self._probing = False

    def admit(self) -> bool:
        """Whether a call may go out now; after the pause, only one at a time until one succeeds."""
        if self._skip_until is None:
            return True
        if self._probing or self.clock() < self._skip_until:
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        self._skip_until, self._probing = None, False

    def failed(self, error: DownstreamError) -> None:
        self._skip_until, self._probing = self.clock() + self.skip_s, False
        self._timed_out = isinstance(error, DownstreamTimeout)

    def abandoned(self) -> None:
        """The call was cancelled before the downstream answered: it proved nothing either way."""
        self._probing = False

    def skipped(self) -> DownstreamError:
        message = f"{self.name} service failed moments ago; not asked again for {self.skip_s:g} s"
        error_type = DownstreamTimeout if self._timed_out else DownstreamError
        return error_type(message, service=self.name)


class ShortCircuitClient(ServiceClient):
    """A `ServiceClient` whose calls skip the downstream while its `ShortCircuit` says it is failing.

    Outages (no connection, timeouts, 5xx) count as failures; a 4xx is an answer (the request was wrong,
    not the service). Readiness probes bypass the short circuit: they are how operators see the truth.
    """

    def __init__(self, name: str, base_url: str, *, circuit: ShortCircuit, **kwargs: Any) -> None:
        super().__init__(name, base_url, **kwargs)
        self.circuit = circuit

    async def request(self, method: str, path: str, response_model: type[ResponseT], **kwargs: Any) -> ResponseT:
        if not self.circuit.admit():
            raise self.circuit.skipped()
        try:
            result = await super().request(method, path, response_model, **kwargs)
        except DeadlinePassed:  # not sent: it proved nothing either way
            self.circuit.abandoned()
            raise
        except DownstreamError as exc:
            self.circuit.failed(exc)
            raise
        except DownstreamRejected:
            self.circuit.succeeded()
            raise
        except BaseException:
            self.circuit.abandoned()
            raise
        self.circuit.succeeded()
        return result


def short_circuit_client(name: str, base_url: str, settings: CommonSettings, *, circuit: ShortCircuit,
                         transport: httpx.AsyncBaseTransport | None = None,
                         read_timeout_s: float | None = None) -> ShortCircuitClient:
    """A traced client for one downstream with the timeouts (or `read_timeout_s`) and the service token from
    `settings`."""
    client = ShortCircuitClient(
        name, base_url, circuit=circuit, connect_timeout_s=settings.downstream_connect_timeout_s,
        read_timeout_s=read_timeout_s or settings.downstream_read_timeout_s, transport=transport,
        service_token=settings.service_token.get_secret_value() if settings.service_token else None)
    instrument_client(client.client)
    return client
