"""Keeping one-utterance intent prediction within its latency targets on the CPU it runs on.

The targets are p50 5 ms and p99 20 ms per utterance on one core. The sentence encoder is nearly all of
that time, and what it costs depends on the CPU far more than on anything else: MiniLM embeds 16 tokens
in about 1.6 ms where the core has AVX-512, in 3.6 ms on one AVX2-only EPYC of the same nominal size and
in about 11 ms on another (docs/benchmarks.md). So the first prediction of a model measures its encoder
here (a few dozen probe calls, a fraction of a second, once per encoder and process) and plans:

- `words_first`: when a typical utterance would cost the encoder more than its share of the p50 target,
  the model's words-only fast path (`services.nlp.fast_path`) answers the utterances its words settle,
  and the encoder runs for the rest;
- `max_tokens`: when the longest input would cost more than the encoder's share of the p99 target, input is
  cut to the tokens that fit (the TF-IDF features still read all of it). Only encoders that can truncate
  (MiniLM, tuned or not) take this.

On a CPU fast enough for both, the plan changes nothing. `NLP_LATENCY_PLAN=off` keeps every model on its
full path whatever the CPU.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

P50_TARGET_MS = 5.0
P99_TARGET_MS = 20.0
# Of each target, what the encoder may take, timed alone on one repeated text. The rest of a prediction
# (TF-IDF, the classifier, the out-of-scope stage) costs 0.4 ms so timed, but up to 1.5 ms more in a stream
# of different messages, whose other work evicts the encoder's weights from the caches (CLINC150 on an AVX2
# EPYC: MiniLM 2.8 ms alone, the whole prediction 4.2 ms). That matters at p50; at p99, long input is the
# encoder's alone.
P50_ENCODER_SHARE = 0.5
P99_ENCODER_SHARE = 0.85
TYPICAL_TOKENS = 16  # a customer message's median, with the two special tokens (BANKING77: 13, CLINC150: 10)
MIN_TOKENS = 16  # never cut below this: at 16, BANKING77 validation lost 4.5 points
PROBE_TOKENS = (16, 48)  # lengths timed to fit cost = fixed + per-token × tokens
PROBE_REPEATS = 7  # the median of these calls is a length's cost
PROBE_WORD = "card"  # one word piece in MiniLM's vocabulary
PROBE_TEXT = "I still have not received the card I ordered last week, where is it"  # ~16 tokens or words


@dataclass(frozen=True)
class LatencyPlan:
    """What a model does to stay within the targets here; the default changes nothing."""

    words_first: bool = False
    max_tokens: int | None = None  # cut encoder input to this many tokens; None: the encoder's own limit

    def describe(self) -> dict[str, Any]:
        return asdict(self)


FULL = LatencyPlan()


@runtime_checkable
class Truncating(Protocol):
    """An encoder that counts its tokens and can embed only the first `max_tokens` of them."""

    max_length: int

    def count_tokens(self, text: str) -> int: ...

    def encode_one(self, text: str, max_tokens: int | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class EncoderCost:
    """One-utterance encoding time here: `typical_ms` for a typical message; for truncating encoders, a
    linear fit in tokens as well."""

    typical_ms: float
    fixed_ms: float | None = None
    per_token_ms: float | None = None
    max_length: int | None = None

    def at(self, tokens: int) -> float | None:
        if self.fixed_ms is None or self.per_token_ms is None:
            return None
        return self.fixed_ms + self.per_token_ms * tokens


def plan(cost: EncoderCost) -> LatencyPlan:
    """The plan that keeps an encoder of this cost within the targets."""
    words_first = cost.typical_ms > P50_ENCODER_SHARE * P50_TARGET_MS
    max_tokens: int | None = None
    budget = P99_ENCODER_SHARE * P99_TARGET_MS
    if cost.max_length and cost.fixed_ms is not None and cost.per_token_ms:  # a truncating encoder's fit
        if cost.fixed_ms + cost.per_token_ms * cost.max_length > budget:
            fitting = int((budget - cost.fixed_ms) / cost.per_token_ms)
            max_tokens = max(MIN_TOKENS, min(fitting, cost.max_length))
    return LatencyPlan(words_first, max_tokens)


def measure(encoder: Any) -> EncoderCost:
    """Time `encoder` here; a truncating encoder at `PROBE_TOKENS` lengths, any other on `PROBE_TEXT`."""
    if isinstance(encoder, Truncating):
        short, long = (_probe_text(encoder, n) for n in PROBE_TOKENS)
        short_ms, long_ms = (_median_ms(lambda text=text: encoder.encode_one(text)) for text in (short, long))
        n_short, n_long = encoder.count_tokens(short), encoder.count_tokens(long)
        per_token = max(0.0, (long_ms - short_ms) / max(1, n_long - n_short))
        fixed = max(0.0, short_ms - per_token * n_short)
        return EncoderCost(fixed + per_token * TYPICAL_TOKENS, fixed, per_token, encoder.max_length)
    return EncoderCost(_median_ms(lambda: encoder.encode_one(PROBE_TEXT)))


def _probe_text(encoder: Truncating, tokens: int) -> str:
    """A text of `tokens` tokens, the special ones included."""
    return " ".join([PROBE_WORD] * max(1, tokens - encoder.count_tokens("")))


def _median_ms(call: Callable[[], object]) -> float:
    call()  # warm-up: first-call allocations are not its cost
    times = []
    for _ in range(PROBE_REPEATS):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


_plans: weakref.WeakKeyDictionary[Any, LatencyPlan] = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()  # one measurement at a time: two at once would time each other's contention


def plan_for(encoder: Any, enabled: bool = True) -> LatencyPlan:
    """The plan for a model using `encoder` (measured once per encoder instance); `FULL` when not `enabled`
    or without an encoder."""
    if encoder is None or not enabled:
        return FULL
    with _plans_lock:
        found = _plans.get(encoder)
        if found is None:
            cost = measure(encoder)
            found = _plans[encoder] = plan(cost)
            log.info("latency plan for this CPU", extra={
                "supportbot.encoder": getattr(encoder, "name", type(encoder).__name__),
                "supportbot.encoder_typical_ms": round(cost.typical_ms, 2),
                "supportbot.words_first": found.words_first, "supportbot.max_tokens": found.max_tokens})
        return found
