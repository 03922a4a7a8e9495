"""Intent classifier: TF-IDF word and character n-grams plus MiniLM sentence embeddings, a logistic
regression, and a second-stage out-of-scope detector.

Words are Japanese-aware (`services.nlp.tokens`: MeCab lemmas, so conjugated forms share a feature);
character n-grams add robustness to typos and to words the dictionary lacks; the sentence
embedding brings paraphrases together: MiniLM (`services.nlp.encoder`) or USE multilingual
(`services.nlp.multilingual_encoder`), whichever predicts the data's held-out rows better
(`services.nlp.encoders`), or MiniLM fine-tuned on the data. When the training data has `out_of_scope`
rows, `services.nlp.out_of_scope` learns P(in scope) from out-of-fold predictions, and the threshold on it
is chosen on those held-out scores. A temperature fitted on the same out-of-fold logits calibrates
`confidence`. Without such rows nothing is rejected (threshold 0) and the dialogue
service applies its own low-confidence policy.

A model directory holds `model.joblib` and `meta.json` (format, labels, threshold, the encoder it needs,
held-out figures, training facts). Without an encoder (their packages not installed) training falls back to
TF-IDF alone with a warning, and `meta.json` says `"encoder": null`.

Training tells a `checkpoint` what it does next and how far it is; `supportbot prepare` shows that as its
progress, and stops training there when asked (`services.nlp.prepare`).
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from services.nlp import tokens
from services.nlp.encoder import SentenceEncoder
from services.nlp.encoder_tuning import TuningOptions, tune_encoder
from services.nlp.encoders import Encoder, encoder_named, frozen_encoders
from services.nlp.fast_path import FastPath, lowest_safe_threshold
from services.nlp.features import tfidf_row
from services.nlp.latency import LatencyPlan, Truncating, plan_for
from services.nlp.model_format import FORMAT, default_model_dir
from services.nlp.out_of_scope import OutOfScopeDetector, References, choose_threshold, signals
from services.nlp.staging import held, lock_for, staged
from supportbot.resources import DEFAULT_INTENTS_CSV
from supportbot.settings import NlpSettings

log = logging.getLogger(__name__)

OUT_OF_SCOPE = "out_of_scope"
EMBEDDING_WEIGHT = 2.0  # the embedding block's scale next to the unit-length TF-IDF blocks
REGULARISATION_C = 10.0
FOLDS = 5
CALIBRATION_SHARE = 0.1  # of each label, held out from encoder tuning to calibrate on
OUT_OF_SCOPE_CALIBRATION_SHARE = 0.5
# A frozen encoder replaces a tuned one only when it scores this much higher on the calibration slice: on
# BANKING77 the two came within 0.3 points of each other either way, which is a slice's noise; on the shipped,
# half-Japanese intents frozen MiniLM won by 1.8 (tuning cost Japanese 9 points).
ENCODER_CHOICE_MARGIN = 0.01
TUNED_ENCODER_DIR = "encoder"  # in a model directory, when the model has an encoder of its own
# The threshold rejects as few in-scope utterances as catch this share of the held-out out-of-scope ones.
# Maximising in-scope accuracy + recall instead over-rejected on CLINC150 validation (0.92 in-scope at 0.95
# recall, where 0.947 at 0.92 was to be had); `supportbot intents train --oos-recall` sets another.
TARGET_OUT_OF_SCOPE_RECALL = 0.85
FALLBACK_THRESHOLD = 0.3  # on the top probability, when there are too few examples for held-out scores

Checkpoint = Callable[[str, float], None]
"""Called between training's steps with the step coming next and the share of training done (0..1). It may
raise to stop training: nothing is written until training is over."""
# What each step costs, in seconds on two idle cores with the shipped intents (4,510 rows): the weights that
# make the share done move at an even pace, so that a progress bar's ETA means something.
STEP_COSTS = {"embed": 5.0, "fold": 3.3, "fit": 10.5, "detector": 1.0, "fast_path": 10.0, "tune": 120.0}


class _Steps:
    """Training's progress, told to a checkpoint."""

    def __init__(self, checkpoint: Checkpoint | None, total: float) -> None:
        self._checkpoint = checkpoint
        self._total = total
        self._done = 0.0

    def __call__(self, next_step: str, finished: str | None = None) -> None:
        """`finished`: the kind of step (a `STEP_COSTS` key) just done."""
        if finished is not None:
            self._done += STEP_COSTS[finished]
        if self._checkpoint is not None:
            self._checkpoint(next_step, min(1.0, self._done / self._total))

    def fold(self, what: str) -> Callable[[int, int], None]:
        """A `fold_done` for `_held_out_logits`, reporting `what` and the folds done."""
        return lambda done, folds: self(f"{what}, {done} of {folds} folds done", "fold")


def normalize(text: str) -> str:
    """NFKC (full-width to half-width, etc.), lower case, collapsed whitespace."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def read_examples(path: Path) -> tuple[list[str], list[str]]:
    """Read a `text,category` CSV; rows with an empty text or category are skipped."""
    texts: list[str] = []
    labels: list[str] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"text", "category"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: the CSV header must contain 'text' and 'category'")
        for row in reader:
            text, label = (row.get("text") or "").strip(), (row.get("category") or "").strip()
            if text and label:
                texts.append(text)
                labels.append(label)
    if len(set(labels) - {OUT_OF_SCOPE}) < 2:
        raise ValueError(f"{path}: need at least two intents to train a classifier")
    return texts, labels


@dataclass
class LinearModel:
    """TF-IDF blocks + weighted embedding → softmax, with weights laid out for one-utterance prediction.

    Weights are (features × labels) float32: predicting one utterance gathers the rows of its few non-zero
    n-grams instead of multiplying through the whole vocabulary.
    """

    words: TfidfVectorizer
    chars: TfidfVectorizer
    labels: list[str]
    word_weights: np.ndarray
    char_weights: np.ndarray
    embedding_weights: np.ndarray | None  # already scaled by EMBEDDING_WEIGHT
    intercept: np.ndarray
    temperature: float = 1.0  # multiplies the logits; fitted on held-out predictions so confidence is calibrated

    @classmethod
    def fit(cls, texts: list[str], labels: np.ndarray, embeddings: np.ndarray | None,
            like: LinearModel | None = None) -> LinearModel:
        """`like`: a model fitted on the same texts whose vectorizers to share (not refitted)."""
        if like is not None:
            words, chars = like.words, like.chars
            blocks = [words.transform(texts), chars.transform(texts)]
        else:
            min_df = 2 if len(texts) >= 1000 else 1  # prune one-off n-grams where there are enough examples
            words = TfidfVectorizer(preprocessor=normalize, tokenizer=tokens.words, token_pattern=None,
                                    ngram_range=(1, 2), sublinear_tf=True, min_df=min_df, dtype=np.float32)
            chars = TfidfVectorizer(preprocessor=normalize, analyzer="char_wb", ngram_range=(1, 4),
                                    sublinear_tf=True, min_df=min_df, max_features=200_000, dtype=np.float32)
            blocks = [words.fit_transform(texts), chars.fit_transform(texts)]
        if embeddings is not None:
            blocks.append(sp.csr_matrix(embeddings * EMBEDDING_WEIGHT))
        # Converged tightly: at tol 1e-3 the fit stopped early enough to cost 0.5 (BANKING77) to 2.5 (CLINC150)
        # points of held-out accuracy on tuned embeddings.
        classifier = LogisticRegression(C=REGULARISATION_C, max_iter=1000, tol=1e-4)
        classifier.fit(sp.hstack(blocks, format="csr"), labels)
        coef, intercept = classifier.coef_, classifier.intercept_
        if coef.shape[0] == 1:  # two labels: sklearn keeps one row; softmax over [0, z] is the same sigmoid
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        weights = np.ascontiguousarray(coef.T, dtype=np.float32)
        n_words, n_chars = len(words.vocabulary_), len(chars.vocabulary_)
        return cls(words, chars, [str(c) for c in classifier.classes_], weights[:n_words],
                   weights[n_words:n_words + n_chars],
                   weights[n_words + n_chars:] * EMBEDDING_WEIGHT if embeddings is not None else None,
                   intercept.astype(np.float32))

    def probabilities(self, texts: list[str], embeddings: np.ndarray | None) -> np.ndarray:
        return _softmax(self.logits(texts, embeddings) * self.temperature)

    def logits(self, texts: list[str], embeddings: np.ndarray | None) -> np.ndarray:
        z = (self.words.transform(texts) @ self.word_weights + self.chars.transform(texts) @ self.char_weights
             + self.intercept)
        if self.embedding_weights is not None and embeddings is not None:
            z += embeddings @ self.embedding_weights
        return np.asarray(z)

    def row(self, text: str) -> Row:
        """One utterance's TF-IDF blocks, as `probabilities_one` takes them."""
        return tfidf_row(self.words, text), tfidf_row(self.chars, text)

    def probabilities_one(self, text: str, embedding: np.ndarray | None, row: Row | None = None) -> np.ndarray:
        """`row`: `self.row(text)` (or that of a model sharing these vectorizers), when the caller has it."""
        z = self.intercept.copy()
        for (columns, values), weights in zip(row or self.row(text), (self.word_weights, self.char_weights),
                                              strict=True):
            z += values @ weights[columns]
        if self.embedding_weights is not None and embedding is not None:
            z += embedding @ self.embedding_weights
        return _softmax(z[None, :] * self.temperature)[0]


Row = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""An utterance's word and character TF-IDF rows: (columns, values) each."""


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Prediction:
    intent: str
    confidence: float
    out_of_scope: bool
    alternatives: list[tuple[str, float]] = field(default_factory=list)


class IntentClassifier:
    """The intent model, the out-of-scope detector and threshold chosen for it, its words-only fast path, and
    the encoder it uses."""

    def __init__(self, parts: dict[str, Any], meta: dict[str, Any], encoder: Encoder | None,
                 plan: LatencyPlan | None = None) -> None:
        """`plan`: how to keep within the latency targets; None: measured on first use (`services.nlp.latency`),
        unless `NLP_LATENCY_PLAN=off`."""
        self.model: LinearModel = parts["model"]
        self.references: References | None = parts.get("references")
        self.detector: OutOfScopeDetector | None = parts.get("detector")
        self.fast_path: FastPath | None = parts.get("fast_path")
        self._plan = plan
        self.meta = meta
        self.encoder = encoder
        self.labels: list[str] = list(self.model.labels)
        self.threshold = float(meta.get("threshold", 0.0))
        self._oos_column = self.labels.index(OUT_OF_SCOPE) if OUT_OF_SCOPE in self.labels else None

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "intents"))

    @property
    def plan(self) -> LatencyPlan:
        if self._plan is None:
            self._plan = plan_for(self.encoder, enabled=NlpSettings().latency_plan != "off")
        return self._plan

    @plan.setter
    def plan(self, plan: LatencyPlan) -> None:
        self._plan = plan

    @classmethod
    def train(cls, texts: list[str], labels: list[str], *, name: str, encoders: Sequence[Encoder] | None = None,
              tuning: TuningOptions | None = None,
              out_of_scope_recall: float | None = TARGET_OUT_OF_SCOPE_RECALL,
              checkpoint: Checkpoint | None = None) -> IntentClassifier:
        """Fit on everything given; the out-of-scope stage and threshold come from held-out predictions.

        `encoders`: the frozen encoders to choose between (default: `frozen_encoders()`, those installed). Each
        is scored by out-of-fold accuracy and the best kept (the first on a tie, or when the data is too
        small for folds); none: TF-IDF alone.
        `tuning`: fine-tune an encoder of this model's own instead (`services.nlp.encoder_tuning`). It is
        tuned on all but a stratified calibration slice, and temperature, out-of-scope stage and threshold
        are chosen on that slice: embeddings of utterances the encoder was tuned on are too tidy to judge by.
        The frozen encoders are fitted on the same rows and scored on the same slice, and the best kept instead
        when it scores clearly higher there (MiniLM is English; tuning on Japanese lost 9 points). Data too
        small for a slice (`calibration_split`) is trained on the frozen encoders.
        `out_of_scope_recall`: the held-out out-of-scope recall the threshold is chosen to reach with the least
        rejection of in-scope utterances; None: maximise in-scope accuracy + out-of-scope recall.
        `checkpoint`: told of each step (module docstring).
        """
        started = time.perf_counter()
        y = np.asarray(labels)
        fit_rows, calibration_rows = calibration_split(y)
        if tuning is not None and not len(calibration_rows):
            log.warning("too few examples to fine-tune the encoder and calibrate on a held-out slice "
                        "(an intent needs 10); using the shared encoders")
            tuning = None
        candidates = list(frozen_encoders() if encoders is None else encoders)
        choosing = (STEP_COSTS["tune"] + len(candidates) * (STEP_COSTS["embed"] + STEP_COSTS["fold"]) if tuning
                    else max(1, len(candidates)) * (STEP_COSTS["embed"] + FOLDS * STEP_COSTS["fold"]))
        steps = _Steps(checkpoint, choosing + STEP_COSTS["fit"] + STEP_COSTS["detector"] + STEP_COSTS["fast_path"])
        if tuning is not None:
            steps("fine-tuning the sentence encoder")
            encoder, embeddings, held_out, choice = _tuned_or_frozen(texts, y, fit_rows, calibration_rows, tuning,
                                                                     candidates, steps)
        else:
            encoder, embeddings, held_out, choice = _best_frozen(texts, y, candidates, steps)
        steps("fitting the intent model")
        model = LinearModel.fit(texts, y, embeddings)
        steps("fitting the out-of-scope detector", "fit")
        parts: dict[str, Any] = {"model": model}
        if embeddings is not None:
            parts["references"] = References.build(embeddings, y, model.labels, OUT_OF_SCOPE)
        meta: dict[str, Any] = {"format": FORMAT, "name": name, "threshold": 0.0, "out_of_scope_detector": None}
        if held_out is not None:
            model.temperature = fit_temperature(held_out.logits, y[held_out.rows], model.labels)
        meta["temperature"] = round(model.temperature, 4)
        rejected = None
        if OUT_OF_SCOPE in model.labels:
            detector, found, rejected = _fit_detector(held_out, y, embeddings, model.temperature,
                                                      out_of_scope_recall)
            parts["detector"] = detector
            meta.update(found)
        steps("fitting the words-only fast path", "detector")
        parts["fast_path"], meta["fast_path"] = (None, None) if encoder is None else _fit_fast_path(
            texts, y, model, held_out, rejected, fit_rows, calibration_rows)
        steps("trained", "fast_path")
        meta.update({
            "encoder": _encoder_meta(encoder), "encoder_choice": {k: round(v, 4) for k, v in choice.items()} or None,
            "n_examples": len(texts), "intents": model.labels,
            "train_seconds": round(time.perf_counter() - started, 3),
        })
        return cls(parts, meta, encoder)

    def predict(self, text: str, top_k: int = 3, embedding: np.ndarray | None = None) -> Prediction:
        """`embedding`: the text's, by `self.encoder`, when the caller has it already (then the words-only fast
        path is not taken: the encoder's cost is paid)."""
        row = self.model.row(text)
        if embedding is None and self.encoder is not None:
            fast = self.fast_path if self.plan.words_first else None
            if fast is not None:
                probabilities = fast.model.probabilities_one(text, None, row)
                if probabilities.max() >= fast.threshold:
                    return self._prediction(probabilities, top_k, None, words_only=True)
            max_tokens = self.plan.max_tokens
            if max_tokens is not None and isinstance(self.encoder, Truncating):
                embedding = self.encoder.encode_one(text, max_tokens=max_tokens)
            else:
                embedding = self.encoder.encode_one(text)
        return self._prediction(self.model.probabilities_one(text, embedding, row), top_k, embedding)

    def _prediction(self, probabilities: np.ndarray, top_k: int, embedding: np.ndarray | None, *,
                    words_only: bool = False) -> Prediction:
        """The answer from `probabilities` and the `embedding` they used. `words_only`: the fast path's, whose
        threshold was chosen with out-of-scope rejection counted; only its `out_of_scope` class rejects."""
        order = np.argsort(probabilities)[::-1][:top_k]
        best = self.labels[order[0]]
        confidence = float(probabilities[order[0]])
        if words_only:
            in_scope = 1.0
        elif self.detector is not None:
            features = signals(probabilities[None, :], self._oos_column,
                               None if embedding is None else embedding[None, :], self.references)
            in_scope = float(self.detector.in_scope_probability(features)[0])
        else:
            in_scope = confidence
        out_of_scope = best == OUT_OF_SCOPE or in_scope < self.threshold
        alternatives = [(self.labels[i], float(probabilities[i])) for i in order[1:]]
        return Prediction(OUT_OF_SCOPE if out_of_scope else best, confidence, out_of_scope, alternatives)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        parts = {"model": self.model, "references": self.references, "detector": self.detector,
                 "fast_path": self.fast_path}
        joblib.dump(parts, directory / "model.joblib")
        target = directory / TUNED_ENCODER_DIR
        if self.encoder is not None and (self.meta.get("encoder") or {}).get("path"):
            if target.resolve() != self.encoder.directory.resolve():
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(self.encoder.directory, target)
        else:
            shutil.rmtree(target, ignore_errors=True)  # a previous model's
        (directory / "meta.json").write_text(json.dumps(self.meta, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, directory: Path, encoders: Sequence[Encoder] = ()) -> IntentClassifier:
        """A saved model; the encoder its meta.json names is taken from `encoders`, else loaded (built on first
        use)."""
        meta_path, model_path = directory / "meta.json", directory / "model.joblib"
        if not meta_path.is_file() or not model_path.is_file():
            raise FileNotFoundError(f"{directory} is not an intent model directory (needs meta.json, model.joblib)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{directory} holds an intent model of another format; train it again")
        needs = meta.get("encoder")
        encoder: Encoder | None = None
        if needs and needs.get("path"):  # tuned for this model: it lives in the directory
            encoder = SentenceEncoder(directory / needs["path"])
        elif needs:
            encoder = encoder_named(str(needs.get("name")), encoders)
        return cls(joblib.load(model_path), meta, encoder)


def _encoder_meta(encoder: Encoder | None) -> dict[str, Any] | None:
    if encoder is None:
        return None
    meta: dict[str, Any] = {"name": encoder.name, "dimension": encoder.dimension, "weight": EMBEDDING_WEIGHT}
    if "tuned" in encoder.manifest:
        meta.update(path=TUNED_ENCODER_DIR, tuned=encoder.manifest["tuned"])
    return meta


def _best_frozen(texts: list[str], labels: np.ndarray, candidates: list[Encoder], steps: _Steps) -> Chosen:
    """The candidate whose embeddings give the highest out-of-fold accuracy (the first when there is one
    candidate, or too few rows for folds)."""
    if not candidates:
        steps("cross-validating on words alone", "embed")
        return None, None, _held_out_logits(texts, labels, None, steps.fold("cross-validating on words alone")), {}
    best: tuple[Encoder, np.ndarray, HeldOut | None] | None = None
    choice: dict[str, float] = {}
    for candidate in candidates:
        steps(f"embedding with {candidate.name}")
        embeddings = candidate.encode(texts)
        steps(f"cross-validating {candidate.name}", "embed")
        held_out = _held_out_logits(texts, labels, embeddings, steps.fold(f"cross-validating {candidate.name}"))
        if held_out is None or len(candidates) == 1:
            return candidate, embeddings, held_out, {}
        choice[candidate.name] = held_out.accuracy(labels)
        if best is None or choice[candidate.name] > choice[best[0].name]:
            best = (candidate, embeddings, held_out)
    assert best is not None
    return *best, choice


def _tuned_or_frozen(texts: list[str], labels: np.ndarray, fit_rows: np.ndarray, calibration_rows: np.ndarray,
                     tuning: TuningOptions, candidates: list[Encoder], steps: _Steps) -> Chosen:
    """Tune an encoder on `fit_rows`; keep it unless a frozen one scores clearly higher on the slice."""
    tuned = tune_encoder([texts[i] for i in fit_rows], labels[fit_rows], _scratch_dir(), tuning)
    steps("scoring the encoders on the held-out slice", "tune")
    tuned_embeddings = tuned.encode(texts)
    kept: tuple[Encoder, np.ndarray, HeldOut] = (
        tuned, tuned_embeddings, _slice_logits(texts, labels, tuned_embeddings, fit_rows, calibration_rows))
    choice = {"tuned": kept[2].accuracy(labels)}
    bar = choice["tuned"] + ENCODER_CHOICE_MARGIN
    for candidate in candidates:
        embeddings = candidate.encode(texts)
        held_out = _slice_logits(texts, labels, embeddings, fit_rows, calibration_rows)
        steps("scoring the encoders on the held-out slice", "embed")
        steps("scoring the encoders on the held-out slice", "fold")
        choice[candidate.name] = held_out.accuracy(labels)
        if choice[candidate.name] > bar:
            kept, bar = (candidate, embeddings, held_out), choice[candidate.name]
    if kept[0] is not tuned:
        log.warning("the fine-tuned encoder scored below the frozen %s on the held-out slice (%.3f < %.3f); "
                    "using the frozen one", kept[0].name, choice["tuned"], choice[kept[0].name])
    return *kept, choice


def _scratch_dir() -> Path:
    """A temporary directory for a tuned encoder until `save` copies it; removed when the process ends."""
    directory = Path(tempfile.mkdtemp(prefix="supportbot-encoder-"))
    directory.chmod(0o755)  # mkdtemp makes it private; `save` copies the mode, and the model is no secret
    atexit.register(shutil.rmtree, directory, True)
    return directory


@dataclass
class HeldOut:
    """Logits of utterances `rows` from models that did not see them, in groups of one model each.

    `groups`: positions in `rows` scored by one model, with that model's embedding references.
    """

    rows: np.ndarray
    logits: np.ndarray
    groups: list[tuple[np.ndarray, References | None]]

    def accuracy(self, labels: np.ndarray) -> float:
        """Share of the rows whose top logit is their label (`out_of_scope` counts as a label)."""
        classes = np.asarray(sorted(set(labels.tolist())))
        return float((classes[self.logits.argmax(axis=1)] == labels[self.rows]).mean())


Chosen = tuple[Encoder | None, np.ndarray | None, HeldOut | None, dict[str, float]]
"""The encoder kept, every text's embedding by it, the held-out logits, and each candidate's held-out accuracy."""


def _held_out_logits(texts: list[str], labels: np.ndarray, embeddings: np.ndarray | None,
                     fold_done: Callable[[int, int], None] | None = None) -> HeldOut | None:
    """Out-of-fold logits of every utterance (stratified k-fold); `fold_done(done, folds)` after each fold."""
    folds = int(min(FOLDS, np.unique(labels, return_counts=True)[1].min()))
    if folds < 2:
        return None
    logits = np.zeros((len(texts), len(set(labels.tolist()))))
    groups: list[tuple[np.ndarray, References | None]] = []
    for train, held_out in StratifiedKFold(n_splits=folds, shuffle=True, random_state=0).split(texts, labels):
        # Stratified folds no larger than the rarest label: every fold model knows every label, in one order.
        logits[held_out], references = _fit_and_score(texts, labels, embeddings, train, held_out)
        groups.append((held_out, references))
        if fold_done is not None:
            fold_done(len(groups), folds)
    return HeldOut(np.arange(len(texts)), logits, groups)


def _slice_logits(texts: list[str], labels: np.ndarray, embeddings: np.ndarray, fit_rows: np.ndarray,
                  calibration_rows: np.ndarray) -> HeldOut:
    """Logits of the calibration slice from a model fitted on the rest."""
    logits, references = _fit_and_score(texts, labels, embeddings, fit_rows, calibration_rows)
    return HeldOut(calibration_rows, logits, [(np.arange(len(calibration_rows)), references)])


def _fit_and_score(texts: list[str], labels: np.ndarray, embeddings: np.ndarray | None, train: np.ndarray,
                   score: np.ndarray) -> tuple[np.ndarray, References | None]:
    fit_embeddings = None if embeddings is None else embeddings[train]
    model = LinearModel.fit([texts[i] for i in train], labels[train], fit_embeddings)
    logits = model.logits([texts[i] for i in score], None if embeddings is None else embeddings[score])
    references = (None if fit_embeddings is None
                  else References.build(fit_embeddings, labels[train], model.labels, OUT_OF_SCOPE))
    return logits, references


def calibration_split(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, calibration rows): a stratified share of each label's rows held out.

    An intent gives `CALIBRATION_SHARE` of its rows, none if it has fewer than 10, so the fitted model knows
    every intent. `out_of_scope` gives `OUT_OF_SCOPE_CALIBRATION_SHARE`: the threshold is chosen on those
    rows, and data sets often have few. The slice is empty when it would hold fewer than two labels.
    """
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        share = OUT_OF_SCOPE_CALIBRATION_SHARE if label == OUT_OF_SCOPE else CALIBRATION_SHARE
        if len(rows) >= 10 or (label == OUT_OF_SCOPE and len(rows) >= 4):
            held.append(rng.permutation(rows)[:int(round(len(rows) * share))])
    calibration = np.sort(np.concatenate(held)) if len(held) >= 2 else np.zeros(0, dtype=int)
    return np.setdiff1d(np.arange(len(labels)), calibration), calibration


def fit_temperature(logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> float:
    """The logit multiplier that minimises the log loss of held-out predictions."""
    targets = np.searchsorted(np.asarray(classes), labels)
    best, best_loss = 1.0, float("inf")
    for temperature in np.geomspace(0.1, 10, 81):
        p = _softmax(logits * temperature)[np.arange(len(targets)), targets]
        loss = float(-np.log(np.clip(p, 1e-12, 1)).mean())
        if loss < best_loss:
            best, best_loss = float(temperature), loss
    return best


def _fit_detector(held_out: HeldOut | None, labels: np.ndarray, embeddings: np.ndarray | None,
                  temperature: float, target_recall: float | None,
                  ) -> tuple[OutOfScopeDetector | None, dict[str, Any], np.ndarray | None]:
    """The second stage and its threshold, both from held-out predictions of the data given, and which
    held-out rows they reject (None without held-out rows)."""
    fallback = {"threshold": FALLBACK_THRESHOLD, "out_of_scope_detector": "max_probability"}
    if held_out is None:
        return None, fallback, None
    rows = held_out.rows
    is_oos = labels[rows] == OUT_OF_SCOPE
    nested = int(min(FOLDS, is_oos.sum(), (~is_oos).sum()))
    classes = sorted(set(labels.tolist()))
    oos_column = classes.index(OUT_OF_SCOPE)
    probabilities = _softmax(held_out.logits * temperature)
    predicted_oos = probabilities.argmax(axis=1) == oos_column
    if nested < 2:
        return None, fallback, predicted_oos | (probabilities.max(axis=1) < FALLBACK_THRESHOLD)
    features = np.zeros((len(rows), 0))
    for positions, references in held_out.groups:
        group = signals(probabilities[positions], oos_column,
                        None if embeddings is None else embeddings[rows[positions]], references)
        if features.shape[1] == 0:
            features = np.zeros((len(rows), group.shape[1]))
        features[positions] = group
    predicted = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
    # The detector's own held-out scores (nested), so that the threshold is not chosen on its training fit.
    scores = np.zeros(len(rows))
    for train, scored in StratifiedKFold(n_splits=nested, shuffle=True, random_state=0).split(features, is_oos):
        scores[scored] = OutOfScopeDetector.fit(features[train], is_oos[train]).in_scope_probability(
            features[scored])
    correct = (predicted == labels[rows]) & ~is_oos
    threshold, accuracy, recall = choose_threshold(scores, correct, is_oos, predicted == OUT_OF_SCOPE, target_recall)
    return OutOfScopeDetector.fit(features, is_oos), {
        "threshold": threshold, "out_of_scope_detector": "second_stage", "target_out_of_scope_recall": target_recall,
        "held_out": {"rows": len(rows), "in_scope_accuracy": round(accuracy, 4),
                     "out_of_scope_recall": round(recall, 4)},
    }, predicted_oos | (scores < threshold)


def _fit_fast_path(texts: list[str], labels: np.ndarray, model: LinearModel, held_out: HeldOut | None,
                   rejected: np.ndarray | None, fit_rows: np.ndarray, calibration_rows: np.ndarray,
                   ) -> tuple[FastPath | None, dict[str, Any] | None]:
    """The words-only fast path and its meta, its threshold chosen on the calibration slice against the full
    model's held-out answers there (`rejected`: which held-out rows the out-of-scope stage rejected)."""
    if held_out is None or not len(calibration_rows) or not np.isin(calibration_rows, held_out.rows).all():
        return None, None
    positions = np.searchsorted(held_out.rows, calibration_rows)  # both sorted: the slice, or every row
    classes = np.asarray(sorted(set(labels.tolist())), dtype=object)
    full = classes[held_out.logits[positions].argmax(axis=1)]
    if rejected is not None:
        full = np.where(rejected[positions], OUT_OF_SCOPE, full)
    probe = LinearModel.fit([texts[i] for i in fit_rows], labels[fit_rows], None)
    probabilities = probe.probabilities([texts[i] for i in calibration_rows], None)
    gold = labels[calibration_rows]
    fast_correct = np.asarray(probe.labels, dtype=object)[probabilities.argmax(axis=1)] == gold
    full_correct = full == gold
    confidence = probabilities.max(axis=1)
    threshold = lowest_safe_threshold(confidence, fast_correct, full_correct, gold == OUT_OF_SCOPE)
    answered = confidence >= (threshold if threshold is not None else np.inf)
    meta = {"threshold": threshold, "held_out": {
        "rows": len(calibration_rows), "answered_share": round(float(answered.mean()), 4),
        "fast_accuracy": round(float(fast_correct[answered].mean()), 4) if answered.any() else None,
        "full_accuracy": round(float(full_correct[answered].mean()), 4) if answered.any() else None}}
    if threshold is None:
        return None, meta
    return FastPath(LinearModel.fit(texts, labels, None, like=model), threshold), meta


class ModelNotPrepared(FileNotFoundError):
    """The default intent model is not trained yet (`supportbot prepare` trains it)."""


def load_or_train_default(cache_dir: Path, data: Path = DEFAULT_INTENTS_CSV,
                          encoders: Sequence[Encoder] | None = None, *, train: bool = True,
                          checkpoint: Checkpoint | None = None) -> IntentClassifier:
    """The default intent model, trained once from the shipped CSV and cached by its hash and the model kind.

    `train`: False raises ModelNotPrepared instead of training (the nlp service, which never trains in-process).
    Training runs under an `flock`, so processes that start together train once; it saves into a temporary
    directory renamed into place, so a half-written model is never read. Where the cache cannot be written,
    the model trained is returned uncached, with a warning. `checkpoint`: as `IntentClassifier.train`'s.
    """
    if encoders is None:
        encoders = frozen_encoders()
    directory = default_model_dir(cache_dir, [encoder.name for encoder in encoders], data)
    try:
        return IntentClassifier.load(directory, encoders)
    except (FileNotFoundError, ValueError, EOFError) as exc:
        if not train:
            raise ModelNotPrepared(f"no default intent model in {directory}: run `supportbot prepare`") from exc
    try:
        lock = lock_for(directory)
    except OSError as exc:
        log.warning("could not cache the default intent model: %s", type(exc).__name__)
        texts, labels = read_examples(data)
        return IntentClassifier.train(texts, labels, name="default", encoders=encoders, checkpoint=checkpoint)
    with held(lock, directory):
        try:
            return IntentClassifier.load(directory, encoders)  # trained by another process meanwhile
        except (FileNotFoundError, ValueError, EOFError):
            pass
        texts, labels = read_examples(data)
        model = IntentClassifier.train(texts, labels, name="default", encoders=encoders, checkpoint=checkpoint)
        try:
            with staged(directory) as staging:
                model.save(staging)
        except OSError as exc:
            log.warning("could not cache the default intent model: %s", type(exc).__name__)
    return model
