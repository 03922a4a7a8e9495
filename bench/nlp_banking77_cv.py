"""BANKING77 accuracy by stratified k-fold cross-validation of train.csv, next to the issue's reference models.

One 10% slice scores ±0.8 points (1,000 rows); k folds score every one of the 10,003 rows once, by a model
that did not see it. Side by side on the same folds:
  - supportbot tuned: `IntentClassifier.train` with a fine-tuned encoder, what `supportbot intents train` does;
  - frozen MiniLM + LR: the shared encoder's embeddings alone into a logistic regression, the reference the
    issue quotes for the official test split (about 0.93);
  - TF-IDF + LR: word 1-2-grams into a logistic regression (the issue quotes about 0.91);
each reference also with scikit-learn's defaults (C=1, unigrams), since the issue does not say how its
figures were configured.
The difference between a reference's cross-validated accuracy and its quoted test figure says how much
harder these folds are than the test split.

`--learning-curve` instead trains the two frozen-encoder models on 50%, 75% and all of each training fold:
how much accuracy more rows buy (`intents train` on all of train.csv sees a quarter more than a fold).

    python bench/nlp_banking77_cv.py [--data ../shared/data] [--folds 5] [--only-references | --learning-curve]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nlp_intents import Baseline  # noqa: E402 - this folder's intent benchmark, run as a script beside it

from services.nlp.classifier import IntentClassifier, LinearModel, read_examples  # noqa: E402
from services.nlp.encoder import load_encoder  # noqa: E402
from services.nlp.encoder_tuning import TuningOptions  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-references", action="store_true", help="skip the (slow) supportbot model")
    parser.add_argument("--learning-curve", action="store_true", help="frozen-encoder models on shares of a fold")
    args = parser.parse_args()
    texts, categories = read_examples(args.data / "banking77" / "train.csv")
    labels = np.asarray(categories)
    embeddings = load_encoder().encode(texts)
    if args.learning_curve:
        learning_curve(texts, labels, embeddings, args.folds)
        return
    correct: dict[str, list[np.ndarray]] = {}
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0).split(texts, labels)
    print("| fold | model | accuracy | train s |\n|---|---|---|---|")
    for fold, (train, test) in enumerate(folds):
        train_texts, test_texts = [texts[i] for i in train], [texts[i] for i in test]
        models = {
            "frozen MiniLM + LR": lambda: LogisticRegression(C=10.0, max_iter=1000).fit(
                embeddings[train], labels[train]).predict(embeddings[test]),
            "frozen MiniLM + LR, defaults": lambda: LogisticRegression(max_iter=1000).fit(
                embeddings[train], labels[train]).predict(embeddings[test]),
            "TF-IDF + LR": lambda: Baseline(train_texts, labels[train].tolist()).pipeline.predict(test_texts),
            "TF-IDF + LR, defaults": lambda: make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000)).fit(
                train_texts, labels[train]).predict(test_texts),
        }
        if not args.only_references:
            def tuned() -> np.ndarray:
                model = IntentClassifier.train(train_texts, labels[train].tolist(), name="banking77",
                                               tuning=TuningOptions())
                return np.asarray([model.predict(text).intent for text in test_texts])

            models = {"supportbot tuned": tuned, **models}
        for name, predict in models.items():
            started = time.perf_counter()
            hits = predict() == labels[test]
            correct.setdefault(name, []).append(hits)
            print(f"| {fold} | {name} | {hits.mean():.4f} | {time.perf_counter() - started:.0f} |", flush=True)
    print("\n| model | accuracy over all rows | fold min | fold max |\n|---|---|---|---|")
    for name, hits in correct.items():
        per_fold = [h.mean() for h in hits]
        print(f"| {name} | {np.concatenate(hits).mean():.4f} | {min(per_fold):.4f} | {max(per_fold):.4f} |")


def learning_curve(texts: list[str], labels: np.ndarray, embeddings: np.ndarray, folds: int) -> None:
    """Cross-validated accuracy of the frozen-encoder models trained on shares of each training fold."""
    rng = np.random.default_rng(0)
    print("| share of a training fold | rows | frozen MiniLM + LR | supportbot shared (TF-IDF + MiniLM + LR) |")
    print("|---|---|---|---|")
    for share in (0.5, 0.75, 1.0):
        frozen, shared = [], []
        for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=0).split(texts, labels):
            rows = np.sort(rng.permutation(train)[:int(len(train) * share)])
            frozen.append(LogisticRegression(C=10.0, max_iter=1000).fit(
                embeddings[rows], labels[rows]).predict(embeddings[test]) == labels[test])
            model = LinearModel.fit([texts[i] for i in rows], labels[rows], embeddings[rows])
            predicted = np.asarray(model.labels)[model.logits([texts[i] for i in test], embeddings[test]).argmax(1)]
            shared.append(predicted == labels[test])
        print(f"| {share:.0%} | {int(len(train) * share)} | {np.concatenate(frozen).mean():.4f} | "
              f"{np.concatenate(shared).mean():.4f} |", flush=True)


if __name__ == "__main__":
    main()
