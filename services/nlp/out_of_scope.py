"""Out-of-scope detection: a second-stage model over the intent classifier's output and embedding geometry.

A threshold on the top probability alone trades in-scope accuracy against out-of-scope recall. This stage
adds how the utterance sits among the training data: cosine to its nearest in-scope prototypes (k-means
centres per intent, few enough to stay fast), to the predicted intent's centroid, and to the out-of-scope
training rows. A logistic regression on those signals, trained on held-out predictions, gives
P(in scope); the threshold on it is chosen on held-out scores: the least rejection that reaches a target
out-of-scope recall (by default), or the best in-scope accuracy plus out-of-scope recall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression

PROTOTYPES_PER_INTENT = 20
NEAREST = 5


@dataclass
class References:
    """Embedding landmarks from the training data, for one classifier's label order."""

    prototypes: np.ndarray  # (n, dim) in-scope k-means centres, unit length
    centroids: np.ndarray   # (n_labels, dim) per in-scope label, unit length; zero for out_of_scope
    out_of_scope: np.ndarray  # (m, dim) the out-of-scope training embeddings

    @classmethod
    def build(cls, embeddings: np.ndarray, labels: np.ndarray, classes: list[str], oos_label: str) -> References:
        prototypes = []
        centroids = np.zeros((len(classes), embeddings.shape[1]), dtype=np.float32)
        for index, label in enumerate(classes):
            if label == oos_label:
                continue
            rows = embeddings[labels == label]
            centroids[index] = _unit(rows.mean(axis=0))
            if len(rows) > PROTOTYPES_PER_INTENT:
                rows = _unit(KMeans(n_clusters=PROTOTYPES_PER_INTENT, n_init=1, random_state=0).fit(rows)
                             .cluster_centers_)
            prototypes.append(rows)
        return cls(np.ascontiguousarray(np.vstack(prototypes), dtype=np.float32), centroids,
                   np.ascontiguousarray(embeddings[labels == oos_label], dtype=np.float32))


def signals(probabilities: np.ndarray, oos_column: int | None, embeddings: np.ndarray | None,
            references: References | None) -> np.ndarray:
    """One row of detector inputs per utterance (probability shape, then embedding geometry if any)."""
    p = probabilities
    in_scope = p if oos_column is None else np.delete(p, oos_column, axis=1)
    top2 = np.sort(in_scope, axis=1)[:, -2:] if in_scope.shape[1] > 1 else np.hstack([np.zeros_like(in_scope),
                                                                                         in_scope])
    p_max, p_second = top2[:, -1], top2[:, -2]
    entropy = -(p * np.log(np.clip(p, 1e-12, 1))).sum(axis=1)
    p_oos = p[:, oos_column] if oos_column is not None else np.zeros(len(p))
    columns = [p_max, p_max - p_second, entropy, p_oos, np.log(p_max + 1e-9)]
    if embeddings is not None and references is not None:
        predicted = p.copy()
        if oos_column is not None:
            predicted[:, oos_column] = -1
        predicted_label = predicted.argmax(axis=1)
        similarity = embeddings @ references.prototypes.T
        k = min(NEAREST, similarity.shape[1])
        nearest = np.partition(similarity, -k, axis=1)[:, -k:]
        nearest_one = nearest.max(axis=1)
        to_oos = ((embeddings @ references.out_of_scope.T).max(axis=1) if len(references.out_of_scope)
                  else np.zeros(len(p)))
        centroid = (embeddings * references.centroids[predicted_label]).sum(axis=1)
        columns += [nearest_one, nearest.mean(axis=1), centroid, to_oos, nearest_one - to_oos]
    return np.column_stack(columns)


@dataclass
class OutOfScopeDetector:
    """Standardised logistic regression: `in_scope_probability` of each row of `signals`."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, features: np.ndarray, is_oos: np.ndarray) -> OutOfScopeDetector:
        mean, scale = features.mean(axis=0), features.std(axis=0)
        scale[scale == 0] = 1.0
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
        model.fit((features - mean) / scale, ~is_oos)
        return cls(mean, scale, model.coef_[0].copy(), float(model.intercept_[0]))

    def in_scope_probability(self, features: np.ndarray) -> np.ndarray:
        z = ((features - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def choose_threshold(scores: np.ndarray, correct: np.ndarray, is_oos: np.ndarray, predicted_oos: np.ndarray,
                     target_recall: float | None = None) -> tuple[float, float, float]:
    """The in-scope score below which to reject, and the (in-scope accuracy, out-of-scope recall) it gives.

    `scores` are held-out in-scope scores; `correct` marks in-scope rows whose intent was right;
    `predicted_oos` rows were already rejected by the out_of_scope class. With `target_recall`, the threshold
    rejects as little as reaches that out-of-scope recall (the most in-scope accuracy that keeps it);
    without, it maximises in-scope accuracy + out-of-scope recall. Scores are probabilities, so the
    threshold is in [0, 1].
    """
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    # Rejecting the j lowest scores loses their correct in-scope answers and catches their unrejected oos rows.
    lost = np.concatenate([[0], np.cumsum(correct[order])])
    caught = np.concatenate([[0], np.cumsum((is_oos & ~predicted_oos)[order])])
    n_in, n_oos = max(int((~is_oos).sum()), 1), max(int(is_oos.sum()), 1)
    accuracy = (correct.sum() - lost) / n_in
    recall = ((is_oos & predicted_oos).sum() + caught) / n_oos
    if target_recall is not None and is_oos.any():
        objective = np.where(recall >= target_recall - 1e-12, accuracy, -1.0)
    else:
        objective = accuracy + recall
    # Every j on the first run of best values is equally good on these rows; the middle of their score gap
    # leaves the most margin on both sides for new data.
    first = int(np.argmax(objective))
    last = first
    while last + 1 < len(objective) and objective[last + 1] >= objective[first] - 1e-12:
        last += 1
    low = float(ranked[first - 1]) if first > 0 else 0.0
    high = float(ranked[last]) if last < len(ranked) else 1.0
    threshold, j = (low + high) / 2, first
    return threshold, float(accuracy[j]), float(recall[j])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)
