"""The words-only fast path: chosen so it loses nothing on held-out rows, taken only when the plan says so,
and the encoder skipped for exactly the utterances it answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.nlp.classifier import OUT_OF_SCOPE, IntentClassifier
from services.nlp.fast_path import THRESHOLDS, lowest_safe_threshold
from services.nlp.latency import FULL, LatencyPlan, plan_for


def test_the_threshold_is_the_lowest_from_which_up_the_fast_answers_lose_nothing() -> None:
    confidence = np.array([0.99, 0.97, 0.96, 0.93, 0.87, 0.5])
    full = np.array([True, True, True, True, True, False])
    # wrong only at 0.87: 0.9 is the lowest threshold with no loss; the right answer at 0.5 is never taken
    fast = np.array([True, True, True, True, False, True])
    assert lowest_safe_threshold(confidence, fast, full) == 0.9
    assert lowest_safe_threshold(confidence, np.ones(6, dtype=bool), full) == min(THRESHOLDS) == 0.85
    # an out-of-scope row it lets through is not made good by an in-scope row it gets right
    mixed_fast = np.array([True, True, True, False, True, True])
    mixed_full = np.array([True, False, True, True, True, True])
    assert lowest_safe_threshold(confidence, mixed_fast, mixed_full) == 0.85
    out_of_scope = np.array([False, False, False, True, False, False])
    assert lowest_safe_threshold(confidence, mixed_fast, mixed_full, out_of_scope) == 0.95
    # wrong where the full model is right, at the very top: no fast path
    assert lowest_safe_threshold(confidence, np.array([False, True, True, True, True, True]), full) is None
    # where both are wrong, the fast path loses nothing
    assert lowest_safe_threshold(confidence, np.array([False] + [True] * 5), np.array([False] + [True] * 5)) == 0.85


INTENTS = {
    "track": ["where is my parcel {}", "track my delivery {}", "my package has not arrived {}",
              "when will my order {} arrive", "shipping status for order {}"],
    "refund": ["I want a refund for {}", "give me my money back for {}", "refund order {} please",
               "how do I get reimbursed for {}", "return {} and refund me"],
    "password": ["reset my password for {}", "I forgot my password on {}", "cannot log in to {} password",
                 "change the password of {}", "password reset link for {} not working"],
}
OUT = ["what's the weather in {}", "tell me a joke about {}", "who won the football match in {}",
       "recommend a restaurant in {}"]
FILLERS = ["the shop", "my account", "A-1234", "the blue shoes", "last week", "my phone", "the app", "order 77"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> IntentClassifier:
    texts, labels = [], []
    for intent, patterns in INTENTS.items():
        for pattern in patterns:
            for filler in FILLERS[:4]:
                texts.append(pattern.format(filler))
                labels.append(intent)
    for pattern in OUT:
        for filler in ("Paris", "Rome", "Lima"):
            texts.append(pattern.format(filler))
            labels.append(OUT_OF_SCOPE)
    trained = IntentClassifier.train(texts, labels, name="fast")
    directory = tmp_path_factory.mktemp("fast") / "model"
    trained.save(directory)
    return IntentClassifier.load(directory)


class Spy:
    """Counts the encoder's calls and the `max_tokens` each was given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, model: IntentClassifier) -> None:
        self.calls: list[int | None] = []
        encode_one = model.encoder.encode_one

        def counted(text: str, max_tokens: int | None = None) -> np.ndarray:
            self.calls.append(max_tokens)
            return encode_one(text) if max_tokens is None else encode_one(text, max_tokens=max_tokens)

        monkeypatch.setattr(model.encoder, "encode_one", counted)


def test_training_chooses_a_fast_path_on_the_held_out_slice(model: IntentClassifier) -> None:
    chosen = model.meta["fast_path"]
    assert model.fast_path is not None and chosen["threshold"] == model.fast_path.threshold
    held_out = chosen["held_out"]
    assert held_out["rows"] > 0 and 0 < held_out["answered_share"] <= 1
    assert held_out["fast_accuracy"] >= held_out["full_accuracy"]
    # saved and loaded, the fast model still reads the full model's own TF-IDF features
    assert model.fast_path.model.words is model.model.words and model.fast_path.model.chars is model.model.chars
    assert model.fast_path.model.embedding_weights is None


def test_words_first_skips_the_encoder_for_what_the_words_settle(model: IntentClassifier,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert model.encoder is not None and model.fast_path is not None
    clear = "I want a refund for my account"
    model.plan = FULL
    full_answer = model.predict(clear)
    model.plan = LatencyPlan(words_first=True)
    try:
        spy = Spy(monkeypatch, model)
        fast_answer = model.predict(clear)
        assert spy.calls == []
        assert fast_answer.intent == full_answer.intent == "refund" and not fast_answer.out_of_scope
        assert fast_answer.confidence >= model.fast_path.threshold
        vague = "hmm"
        model.predict(vague)
        assert spy.calls == [None]  # not settled by words: the full model ran
        # a caller that already has the embedding gets the full model, with its out-of-scope stage
        embedding = model.encoder.encode_one("what's the weather in Oslo")
        spy.calls.clear()
        assert model.predict("what's the weather in Oslo", embedding=embedding).out_of_scope
        assert spy.calls == []
    finally:
        model.plan = FULL


def test_out_of_scope_is_still_rejected_words_first(model: IntentClassifier) -> None:
    model.plan = LatencyPlan(words_first=True)
    try:
        for text in ("what's the weather in Oslo", "tell me a joke about cats", "recommend a restaurant in Kyoto"):
            assert model.predict(text).out_of_scope, text
    finally:
        model.plan = FULL


def test_the_full_plan_always_runs_the_encoder_and_a_cut_reaches_it(model: IntentClassifier,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch, model)
    model.plan = FULL
    model.predict("I want a refund for my account")
    assert spy.calls == [None]
    model.plan = LatencyPlan(max_tokens=16)
    try:
        long = "I want a refund for the blue shoes I bought last week because they do not fit at all " * 3
        assert model.predict(long).intent == "refund"
        assert spy.calls == [None, 16]
    finally:
        model.plan = FULL


def test_nlp_latency_plan_chooses_between_this_cpus_plan_and_the_full_model(
        model: IntentClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model.save(tmp_path / "model")
    monkeypatch.setenv("NLP_LATENCY_PLAN", "auto")
    measured = IntentClassifier.load(tmp_path / "model")
    assert measured.plan is plan_for(measured.encoder)  # measured once for this encoder, then shared
    monkeypatch.setenv("NLP_LATENCY_PLAN", "off")
    assert IntentClassifier.load(tmp_path / "model").plan == FULL
