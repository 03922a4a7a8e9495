"""Fine-tuning the encoder for one model: it learns the intents, is calibrated on a slice it never saw,
and travels inside the model directory."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.nlp.classifier import ENCODER_CHOICE_MARGIN, OUT_OF_SCOPE, IntentClassifier, calibration_split
from services.nlp.encoder import MANIFEST_FILE, MODEL_FILE, load_encoder
from services.nlp.encoder_tuning import TUNED_NAME, Schedule, TuningOptions, tune_encoder

# Two intents that share most of their words ("card"): a frozen general-purpose encoder puts them close.
LOST = [f"{lead} my card {tail}" for lead in ("I lost", "I can't find", "someone stole", "I misplaced")
        for tail in ("yesterday", "today", "on the bus", "at work")]
ARRIVE = [f"{lead} my card {tail}" for lead in ("when will I get", "still waiting for", "has not arrived",
                                                "how long until I receive") for tail in ("yesterday", "today",
                                                                                         "by post", "at home")]
OTHER = [f"what is the weather like in {city}" for city in ("Paris", "Rome", "Oslo", "Lima", "Kyoto", "Quito",
                                                            "Cairo", "Accra", "Perth", "Dubai")]
# Not trained on: the same ways of asking, said at other times.
UNSEEN = [(f"{lead} my card {tail}", intent) for lead, intent in (("I lost", "lost_card"), ("someone stole", "lost_card"),
                                                                   ("still waiting for", "card_arrival"),
                                                                   ("has not arrived", "card_arrival"))
          for tail in ("this morning", "last week")]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[IntentClassifier, Path]:
    texts = LOST + ARRIVE + OTHER
    labels = ["lost_card"] * len(LOST) + ["card_arrival"] * len(ARRIVE) + [OUT_OF_SCOPE] * len(OTHER)
    model = IntentClassifier.train(texts, labels, name="cards", tuning=TuningOptions(epochs=4, batch_size=8))
    directory = tmp_path_factory.mktemp("tuned") / "model"
    model.save(directory)
    return model, directory


def separation(encoder, pairs: list[tuple[str, str]]) -> float:  # noqa: ANN001 - either encoder kind
    """Mean cosine within an intent minus across the two intents, over utterances neither model trained on."""
    vectors = encoder.encode([text for text, _ in pairs])
    labels = np.array([label for _, label in pairs])
    similarity = vectors @ vectors.T
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(pairs), dtype=bool)
    return float(similarity[same & off_diagonal].mean() - similarity[~same].mean())


def test_tuning_separates_intents_the_shared_encoder_confuses(tuned: tuple[IntentClassifier, Path],
                                                              shared_encoder_dir: Path) -> None:
    model, _ = tuned
    shared = load_encoder(shared_encoder_dir)
    assert model.encoder is not None and model.encoder.name == TUNED_NAME
    assert separation(model.encoder, UNSEEN) > separation(shared, UNSEEN) + 0.08  # measured: 0.31 vs 0.15
    for text, intent in UNSEEN:
        assert model.predict(text).intent == intent, text


def test_the_model_directory_carries_its_encoder(tuned: tuple[IntentClassifier, Path], tmp_path: Path) -> None:
    model, directory = tuned
    moved = tmp_path / "elsewhere"
    shutil.copytree(directory, moved)  # a model directory is self-contained: no path to the scratch copy
    assert {p.name for p in (moved / "encoder").iterdir()} == {MODEL_FILE, "tokenizer.json", MANIFEST_FILE}
    loaded = IntentClassifier.load(moved)
    assert loaded.encoder is not None and loaded.encoder.directory == moved / "encoder"
    meta = loaded.meta["encoder"]
    assert meta["name"] == TUNED_NAME and meta["path"] == "encoder"
    choice = loaded.meta["encoder_choice"]  # all three were scored on the held-out slice; tuned was kept
    assert set(choice) == {"tuned", "minilm-l6-int8", "use-multilingual-v3"}
    assert max(choice.values()) <= choice["tuned"] + ENCODER_CHOICE_MARGIN, choice
    assert meta["tuned"]["epochs"] == 4 and len(meta["tuned"]["epoch_losses"]) == 4
    assert meta["tuned"]["epoch_losses"][-1] < meta["tuned"]["epoch_losses"][0]  # it learned
    for text, _ in UNSEEN + [("what's the weather in Berlin", OUT_OF_SCOPE)]:
        before, after = model.predict(text), loaded.predict(text)
        assert (after.intent, after.out_of_scope) == (before.intent, before.out_of_scope)
        assert after.confidence == pytest.approx(before.confidence, abs=1e-6)


def test_out_of_scope_is_calibrated_on_the_held_out_slice(tuned: tuple[IntentClassifier, Path]) -> None:
    model, _ = tuned
    assert model.meta["out_of_scope_detector"] == "second_stage"
    # 10% of each 16-row intent (2) and half of the 10 out-of-scope rows: the slice the encoder never saw.
    assert model.meta["held_out"]["rows"] == 2 + 2 + 5
    assert model.meta["encoder"]["tuned"]["examples"] == len(LOST) + len(ARRIVE) + len(OTHER) - 9
    assert model.predict("what's the weather in Berlin").out_of_scope
    assert not model.predict("I lost my card").out_of_scope


def test_calibration_split_is_stratified_disjoint_and_spares_small_intents() -> None:
    labels = np.array(["a"] * 50 + ["b"] * 30 + ["tiny"] * 9 + [OUT_OF_SCOPE] * 8)
    fit, calibration = calibration_split(labels)
    assert sorted(np.concatenate([fit, calibration]).tolist()) == list(range(len(labels)))
    held = dict(zip(*np.unique(labels[calibration], return_counts=True), strict=True))
    assert held == {"a": 5, "b": 3, OUT_OF_SCOPE: 4}  # "tiny" keeps all nine rows for fitting
    assert calibration_split(labels)[1].tolist() == calibration.tolist()  # reproducible
    assert calibration_split(np.array(["a"] * 50 + ["b"] * 5))[1].size == 0  # one label: no slice


def test_data_too_small_to_calibrate_is_trained_on_the_shared_encoder(shared_encoder_dir: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    texts = LOST[:8] + ARRIVE[:8]  # fewer than 10 per intent: no held-out slice to calibrate a tuned model on
    model = IntentClassifier.train(texts, ["lost_card"] * 8 + ["card_arrival"] * 8, name="tiny",
                                   tuning=TuningOptions(epochs=1))
    assert model.meta["encoder"]["name"] == "minilm-l6-int8" and "path" not in model.meta["encoder"]
    assert "too few examples to fine-tune" in caplog.text


def test_threshold_rejects_as_little_as_reaches_the_target_recall() -> None:
    from services.nlp.out_of_scope import choose_threshold

    # Ten out-of-scope rows scored 0.05..0.50, ten correct in-scope rows 0.30..0.95: they overlap.
    oos_scores = np.linspace(0.05, 0.50, 10)
    in_scores = np.linspace(0.30, 0.95, 10)
    scores = np.concatenate([oos_scores, in_scores])
    is_oos = np.array([True] * 10 + [False] * 10)
    correct, none = ~is_oos, np.zeros(20, dtype=bool)
    threshold, accuracy, recall = choose_threshold(scores, correct, is_oos, none, target_recall=0.8)
    assert recall == 0.8 and accuracy == 0.8  # the 8th lowest oos row scores above two in-scope rows
    assert oos_scores[7] < threshold < in_scores[2]
    threshold, accuracy, recall = choose_threshold(scores, correct, is_oos, none, target_recall=0.5)
    assert (recall, accuracy) == (0.5, 1.0) and oos_scores[4] < threshold < oos_scores[5]
    # No target: the best accuracy + recall over the same rows.
    _, accuracy, recall = choose_threshold(scores, correct, is_oos, none, target_recall=None)
    assert (accuracy, recall) == (pytest.approx(0.7), 1.0)  # all ten oos rows, for three in-scope ones


class MeaninglessEncoder:
    """Stands in for a tuning gone wrong: a fixed random unit vector per text, nothing learned."""

    name, dimension, manifest = TUNED_NAME, 384, {"tuned": {"epochs": 0}}

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def encode_one(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
        vector = np.random.default_rng(seed).standard_normal(self.dimension)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.encode_one(text) for text in texts])


def tuned_against(scores: list[float], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> IntentClassifier:
    """Train with tuning, the slice accuracies given: tuned first, then MiniLM's, then USE multilingual's."""
    import services.nlp.classifier as classifier

    monkeypatch.setattr(classifier, "tune_encoder", lambda *args: MeaninglessEncoder(tmp_path))
    # On this small set all score 1.0 on the slice; what is decided here is what a lower score leads to.
    given = iter(scores)
    monkeypatch.setattr(classifier.HeldOut, "accuracy", lambda self, labels: next(given))
    texts = LOST + ARRIVE + OTHER
    labels = ["lost_card"] * len(LOST) + ["card_arrival"] * len(ARRIVE) + [OUT_OF_SCOPE] * len(OTHER)
    return IntentClassifier.train(texts, labels, name="cards", tuning=TuningOptions())


def test_a_tuned_encoder_that_scores_below_a_frozen_one_is_not_kept(
        shared_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    model = tuned_against([0.62, 0.91, 0.80], monkeypatch, tmp_path)
    assert model.meta["encoder_choice"] == {"tuned": 0.62, "minilm-l6-int8": 0.91, "use-multilingual-v3": 0.80}
    assert model.meta["encoder"]["name"] == "minilm-l6-int8" and "path" not in model.meta["encoder"]
    assert "scored below the frozen minilm-l6-int8" in caplog.text
    assert model.meta["out_of_scope_detector"] == "second_stage"  # calibrated on the same slice
    model.save(tmp_path / "model")
    assert not (tmp_path / "model" / "encoder").exists()
    loaded = IntentClassifier.load(tmp_path / "model")
    assert loaded.encoder is not None and loaded.encoder.name == "minilm-l6-int8"
    assert loaded.predict("I lost my card").intent == "lost_card"


def test_the_best_frozen_encoder_is_kept_over_a_weaker_tuned_one(
        shared_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = tuned_against([0.62, 0.80, 0.91], monkeypatch, tmp_path)
    assert model.meta["encoder"]["name"] == "use-multilingual-v3"
    assert model.predict("I lost my card").intent == "lost_card"


def test_a_frozen_encoder_within_the_margin_does_not_replace_the_tuned_one(
        shared_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    within = 0.90 + ENCODER_CHOICE_MARGIN * 0.9
    model = tuned_against([0.90, within, within - 0.001], monkeypatch, tmp_path)
    assert model.meta["encoder"]["name"] == TUNED_NAME and model.meta["encoder"]["path"] == "encoder"


def test_held_out_accuracy_counts_the_top_logit_against_each_row_label() -> None:
    from services.nlp.classifier import HeldOut

    labels = np.array(["a", "b", "a", "b", OUT_OF_SCOPE])
    logits = np.array([[0.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])  # columns: a, b, out_of_scope
    held_out = HeldOut(np.array([1, 2, 4]), logits, [])
    assert held_out.accuracy(labels) == pytest.approx(2 / 3)  # row 1 (b) right, row 2 (a) wrong, row 4 right


def test_schedule_shrinks_to_what_the_budget_affords_and_still_decays_to_zero() -> None:
    schedule = Schedule(planned=1000, warmup_share=0.1)
    assert schedule.factor(0) == pytest.approx(1 / 100) and schedule.factor(99) == pytest.approx(0.901)
    schedule.fit_budget(done=50, elapsed=10.0, budget=60.0)  # 5 steps a second for 60 s
    assert schedule.total == 300
    assert schedule.factor(299) > 0 and schedule.factor(300) == 0  # the decay ends where the budget does
    schedule.fit_budget(done=100, elapsed=1.0, budget=60.0)  # faster than planned: never more than planned
    assert schedule.total == 1000
    schedule.fit_budget(done=100, elapsed=600.0, budget=60.0)  # already over: stop after the next step
    assert schedule.total == 101


def test_tuning_past_its_time_budget_ends_early_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    texts = LOST + ARRIVE
    labels = ["lost_card"] * len(LOST) + ["card_arrival"] * len(ARRIVE)
    # 32 texts in batches of 4: 8 steps an epoch, 400 planned; a millisecond affords none past the first check.
    encoder = tune_encoder(texts, labels, tmp_path / "budget",
                           TuningOptions(epochs=50, batch_size=4, time_budget_s=0.001))
    facts = encoder.manifest["tuned"]
    assert facts["planned_steps"] == 400 and facts["steps"] == 26  # the first check comes after 25 steps
    assert facts["epochs_run"] == 3.25 and len(facts["epoch_losses"]) == 4  # the last epoch partly run
    assert "stopped by its time budget after 3.25 of 50 epochs" in caplog.text
    assert encoder.encode_one("I lost my card").shape == (384,)  # exported and usable as any tuned encoder
    unlimited = tune_encoder(texts, labels, tmp_path / "unlimited",
                             TuningOptions(epochs=1, batch_size=4, time_budget_s=None)).manifest["tuned"]
    assert unlimited["steps"] == unlimited["planned_steps"] == 8 and unlimited["time_budget_s"] is None
