"""Intent classifier: TF-IDF over words and character n-grams, a linear SVM, and a calibrated softmax.

Character n-grams make it work on Japanese (no word segmentation needed) and robust to typos. The SVM's
scores become probabilities through a softmax whose temperature is fitted on cross-validated scores, so
`confidence` means what it says. A model directory holds `model.joblib` and `meta.json` (labels,
temperature, out-of-scope threshold, training facts).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

from supportbot.resources import DEFAULT_INTENTS_CSV

log = logging.getLogger(__name__)

OUT_OF_SCOPE = "out_of_scope"
DEFAULT_THRESHOLD = 0.3


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


def _pipeline() -> Pipeline:
    features = FeatureUnion([
        ("words", TfidfVectorizer(preprocessor=normalize, ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
        ("chars", TfidfVectorizer(preprocessor=normalize, analyzer="char_wb", ngram_range=(2, 5),
                                  sublinear_tf=True, min_df=1, max_features=200_000)),
    ])
    return Pipeline([("features", features), ("clf", LinearSVC(C=0.5))])


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    z = scores * temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_temperature(scores: np.ndarray, targets: np.ndarray) -> float:
    """The softmax temperature that minimises the log loss of held-out scores."""
    best, best_loss = 1.0, float("inf")
    for temperature in np.geomspace(0.5, 50, 60):
        p = softmax(scores, temperature)[np.arange(len(targets)), targets]
        loss = float(-np.log(np.clip(p, 1e-12, 1)).mean())
        if loss < best_loss:
            best, best_loss = float(temperature), loss
    return best


def choose_threshold(probabilities: np.ndarray, targets: np.ndarray, classes: list[str]) -> float:
    """The confidence threshold that maximises in-scope accuracy + out-of-scope recall on held-out scores.

    Without out-of-scope examples there is nothing to balance against: nothing is rejected (0.0), and the
    dialogue service applies its own low-confidence policy.
    """
    if OUT_OF_SCOPE not in classes:
        return 0.0
    oos = classes.index(OUT_OF_SCOPE)
    best = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    in_scope = targets != oos
    best_threshold, best_score = DEFAULT_THRESHOLD, -1.0
    for threshold in np.linspace(0.05, 0.95, 91):
        rejected = (best == oos) | (confidence < threshold)
        in_acc = float(((best == targets) & ~rejected)[in_scope].mean()) if in_scope.any() else 1.0
        oos_recall = float(rejected[~in_scope].mean()) if (~in_scope).any() else 1.0
        if in_acc + oos_recall > best_score:
            best_threshold, best_score = float(threshold), in_acc + oos_recall
    return best_threshold


def _held_out_calibration(texts: list[str], labels: list[str]) -> tuple[float, float]:
    """Temperature and out-of-scope threshold, both fitted on out-of-fold scores (never on training fits)."""
    counts = np.unique(labels, return_counts=True)[1]
    folds = int(min(3, counts.min()))
    if folds < 2:
        return 5.0, DEFAULT_THRESHOLD if OUT_OF_SCOPE in labels else 0.0
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    scores = cross_val_predict(_pipeline(), texts, labels, cv=cv, method="decision_function")
    classes = sorted(set(labels))
    targets = np.array([classes.index(label) for label in labels])
    if scores.ndim == 1:  # two classes: sklearn returns one column
        scores = np.stack([-scores, scores], axis=1)
    temperature = fit_temperature(scores, targets)
    return temperature, choose_threshold(softmax(scores, temperature), targets, classes)


@dataclass
class Prediction:
    intent: str
    confidence: float
    out_of_scope: bool
    alternatives: list[tuple[str, float]] = field(default_factory=list)


class IntentClassifier:
    """A trained pipeline plus the out-of-scope threshold chosen for it."""

    def __init__(self, pipeline: Pipeline, meta: dict[str, object]) -> None:
        self.pipeline = pipeline
        self.meta = meta
        self.labels: list[str] = [str(label) for label in pipeline.classes_]
        self.threshold = float(meta.get("threshold", DEFAULT_THRESHOLD))  # type: ignore[arg-type]
        self.temperature = float(meta.get("temperature", 5.0))  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "intents"))

    @classmethod
    def train(cls, texts: list[str], labels: list[str], *, name: str) -> IntentClassifier:
        started = time.perf_counter()
        temperature, threshold = _held_out_calibration(texts, labels)
        pipeline = _pipeline().fit(texts, labels)
        meta = {"name": name, "threshold": threshold, "temperature": temperature, "n_examples": len(texts),
                "intents": sorted(set(labels)), "train_seconds": round(time.perf_counter() - started, 3)}
        return cls(pipeline, meta)

    def predict(self, text: str, top_k: int = 3) -> Prediction:
        scores = self.pipeline.decision_function([text])
        if scores.ndim == 1:
            scores = np.stack([-scores, scores], axis=1)
        probabilities = softmax(scores[0], self.temperature)
        order = np.argsort(probabilities)[::-1][:top_k]
        best = self.labels[order[0]]
        confidence = float(probabilities[order[0]])
        out_of_scope = best == OUT_OF_SCOPE or confidence < self.threshold
        alternatives = [(self.labels[i], float(probabilities[i])) for i in order[1:]]
        return Prediction(OUT_OF_SCOPE if out_of_scope else best, confidence, out_of_scope, alternatives)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump(self.pipeline, directory / "model.joblib")
        (directory / "meta.json").write_text(json.dumps(self.meta, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, directory: Path) -> IntentClassifier:
        meta_path, model_path = directory / "meta.json", directory / "model.joblib"
        if not meta_path.is_file() or not model_path.is_file():
            raise FileNotFoundError(f"{directory} is not an intent model directory (needs meta.json, model.joblib)")
        return cls(joblib.load(model_path), json.loads(meta_path.read_text()))


def load_or_train_default(cache_dir: Path, data: Path = DEFAULT_INTENTS_CSV) -> IntentClassifier:
    """The default intent model, trained once from the shipped CSV and cached by the CSV's hash."""
    digest = hashlib.sha256(data.read_bytes()).hexdigest()[:16]
    directory = cache_dir / f"default-{digest}"
    try:
        return IntentClassifier.load(directory)
    except (FileNotFoundError, ValueError, EOFError):
        pass
    texts, labels = read_examples(data)
    model = IntentClassifier.train(texts, labels, name="default")
    staging = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    try:
        model.save(staging)
        os.replace(staging, directory)  # atomic; a replica that lost the race keeps its own copy
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        log.warning("could not cache the default intent model: %s", type(exc).__name__)
    return model
