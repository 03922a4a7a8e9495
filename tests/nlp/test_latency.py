"""The latency plan: measuring the encoder here, and what a slow CPU makes an intent model do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.nlp import latency
from services.nlp.encoder import load_encoder
from services.nlp.latency import FULL, MIN_TOKENS, EncoderCost, LatencyPlan, Truncating, measure, plan, plan_for

# Costs as measured on the two kinds of 2-vCPU EPYC this project has run on (docs/benchmarks.md).
AVX512_MINILM = EncoderCost(typical_ms=1.6, fixed_ms=0.7, per_token_ms=0.057, max_length=64)
AVX2_MINILM = EncoderCost(typical_ms=12.9, fixed_ms=2.0, per_token_ms=0.68, max_length=64)
FASTER_AVX2_MINILM = EncoderCost(typical_ms=3.57, fixed_ms=0.2, per_token_ms=0.21, max_length=64)
AVX2_USE = EncoderCost(typical_ms=4.7)


def test_a_fast_cpu_changes_nothing() -> None:
    assert plan(AVX512_MINILM) == FULL
    assert plan(EncoderCost(typical_ms=2.1)) == FULL


def test_a_slow_cpu_answers_from_words_first_and_cuts_long_input_to_what_fits() -> None:
    slow = plan(AVX2_MINILM)
    assert slow.words_first
    assert slow.max_tokens == 22  # (0.85 × 20 ms − 2 ms) / 0.68 ms per token
    assert AVX2_MINILM.at(slow.max_tokens) <= latency.P99_ENCODER_SHARE * latency.P99_TARGET_MS
    assert AVX2_MINILM.at(slow.max_tokens + 1) > latency.P99_ENCODER_SHARE * latency.P99_TARGET_MS


def test_an_encoder_over_half_the_p50_target_goes_words_first_and_cuts_only_what_misses_p99() -> None:
    # The rest of a prediction took 1.4 ms more than this encoder on CLINC150 there: 5.5 ms p50 in all.
    assert plan(FASTER_AVX2_MINILM) == LatencyPlan(words_first=True, max_tokens=None)
    assert plan(EncoderCost(typical_ms=0.49 * latency.P50_TARGET_MS)) == FULL


def test_an_encoder_that_cannot_cut_its_input_only_goes_words_first() -> None:
    assert plan(AVX2_USE) == LatencyPlan(words_first=True, max_tokens=None)


def test_input_is_never_cut_below_the_floor_nor_above_the_encoders_limit() -> None:
    assert plan(EncoderCost(typical_ms=40, fixed_ms=10, per_token_ms=2, max_length=64)).max_tokens == MIN_TOKENS
    # p50 too slow, yet the longest input fits the p99 share: nothing is cut
    assert plan(EncoderCost(typical_ms=5, fixed_ms=4.5, per_token_ms=0.03, max_length=64)).max_tokens is None


class ClockedEncoder:
    """A truncating encoder whose calls cost `fixed + per_token × tokens` ms on a fake clock."""

    max_length = 64

    def __init__(self, clock: list[float], fixed_ms: float, per_token_ms: float) -> None:
        self.clock, self.fixed_ms, self.per_token_ms = clock, fixed_ms, per_token_ms
        self.calls = 0

    def count_tokens(self, text: str) -> int:
        return min(self.max_length, len(text.split()) + 2)

    def encode_one(self, text: str, max_tokens: int | None = None) -> np.ndarray:
        self.calls += 1
        tokens = min(self.count_tokens(text), max_tokens or self.max_length)
        self.clock[0] += (self.fixed_ms + self.per_token_ms * tokens) / 1000
        return np.zeros(4, dtype=np.float32)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(latency.time, "perf_counter", lambda: now[0])
    return now


def test_measuring_recovers_the_encoders_cost_in_tokens(clock: list[float]) -> None:
    encoder = ClockedEncoder(clock, fixed_ms=2.0, per_token_ms=0.68)
    assert isinstance(encoder, Truncating)
    cost = measure(encoder)
    assert cost.fixed_ms == pytest.approx(2.0, abs=1e-6)
    assert cost.per_token_ms == pytest.approx(0.68, abs=1e-6)
    assert cost.typical_ms == pytest.approx(2.0 + 0.68 * latency.TYPICAL_TOKENS, abs=1e-6)
    assert plan(cost) == LatencyPlan(words_first=True, max_tokens=22)


def test_the_plan_is_measured_once_per_encoder_and_not_at_all_when_off(clock: list[float]) -> None:
    encoder = ClockedEncoder(clock, fixed_ms=2.0, per_token_ms=0.68)
    assert plan_for(encoder, enabled=False) == FULL
    assert encoder.calls == 0
    first = plan_for(encoder)
    calls = encoder.calls
    assert first.words_first and calls > 0
    assert plan_for(encoder) is first and encoder.calls == calls
    assert plan_for(None) == FULL


def test_the_real_encoder_cuts_long_input_keeping_its_start(shared_encoder_dir: Path) -> None:
    encoder = load_encoder(shared_encoder_dir)
    assert isinstance(encoder, Truncating) and encoder.max_length == 64
    long = "my card was charged twice for the same order " * 8
    assert encoder.count_tokens(long) == 64  # the model's own limit
    assert np.array_equal(encoder.encode_one(long, max_tokens=64), encoder.encode_one(long))
    cut = encoder.encode_one(long, max_tokens=11)  # [CLS] + 9 word pieces + [SEP]
    assert np.allclose(cut, encoder.encode_one("my card was charged twice for the same order"), atol=1e-6)
    assert not np.allclose(cut, encoder.encode_one(long), atol=1e-3)
    assert encoder.count_tokens("card") == 3


def test_the_real_encoder_is_measured_and_planned_for_this_cpu(shared_encoder_dir: Path) -> None:
    cost = measure(load_encoder(shared_encoder_dir))
    assert cost.per_token_ms is not None and cost.per_token_ms > 0 and cost.fixed_ms is not None
    assert cost.max_length == 64
    assert cost.typical_ms == pytest.approx(cost.at(latency.TYPICAL_TOKENS))
    assert isinstance(plan(cost), LatencyPlan)
