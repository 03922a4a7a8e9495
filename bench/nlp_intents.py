"""Intent benchmark: supportbot's classifier vs a plain TF-IDF + logistic-regression baseline, same data.

Estimates on our own validation slices of the public training data (the official test splits are kept by
the maintainers):
  - BANKING77: a stratified 10% of train.csv held out, the rest trained on;
  - CLINC150: trained on train + oos_train, scored on val + oos_val (in-scope accuracy, where a rejected
    in-scope utterance is wrong, and out-of-scope recall).
Latency is single-utterance prediction on one thread, as the nlp service does it. Two supportbot variants:
"tuned" fine-tunes the encoder (what `supportbot intents train` does by default), "shared" uses the frozen,
shared encoder (what the service's default model does at start-up). Each is scored with the latency plan
this CPU gets (`services.nlp.latency`), as the full model if that plan is not it, and with the plan the
slowest AVX2-only EPYC seen gets (words first, encoder input cut to 22 tokens), to show here what that plan
costs in accuracy and saves in encoder time.

    python bench/nlp_intents.py [--data ../shared/data] [--only banking77|clinc150] [--encoders tuned,shared]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.nlp.classifier import OUT_OF_SCOPE, IntentClassifier  # noqa: E402
from services.nlp.encoder_tuning import TuningOptions  # noqa: E402
from services.nlp.evaluation import evaluate  # noqa: E402
from services.nlp.latency import FULL, EncoderCost, Truncating, plan  # noqa: E402

# MiniLM on the AVX2-only EPYC host of 2026-11-29: 11.6 ms p50 at 13 tokens and 38.7 ms p99 at 53 tokens for
# the whole prediction (docs/benchmarks.md), less about 0.8 ms of TF-IDF.
AVX2_MINILM = EncoderCost(typical_ms=12.9, fixed_ms=2.0, per_token_ms=0.68, max_length=64)
AVX2_TFIDF_MS = 0.8
AVX2_PLAN = plan(AVX2_MINILM)


def projected_avx2_ms(model: IntentClassifier, texts: list[str]) -> tuple[float, float, float]:
    """(p50, p99, share answered by words) of MiniLM models on the AVX2 host under its plan, projected from
    that host's measured cost per token: which utterances the fast path answers, and how many tokens the
    encoder gets for the rest, are computed here; only their cost there is modelled."""
    fast, encoder = model.fast_path, model.encoder
    if fast is None or not isinstance(encoder, Truncating):
        return float("nan"), float("nan"), 0.0
    costs, answered = [], 0
    for text in texts:
        if fast.model.probabilities_one(text, None).max() >= fast.threshold:
            answered += 1
            costs.append(AVX2_TFIDF_MS)
        else:
            tokens = min(encoder.count_tokens(text), AVX2_PLAN.max_tokens or AVX2_MINILM.max_length or 64)
            costs.append(AVX2_TFIDF_MS + float(AVX2_MINILM.at(tokens) or 0))
    return float(np.percentile(costs, 50)), float(np.percentile(costs, 99)), answered / len(texts)


class Baseline:
    """TF-IDF (word 1-2 grams) + logistic regression, max-probability threshold from the same validation rule."""

    def __init__(self, texts: list[str], labels: list[str]) -> None:
        self.pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                                      LogisticRegression(C=10.0, max_iter=1000)).fit(texts, labels)
        self.threshold = 0.0

    def predict(self, text: str):  # noqa: ANN201 - duck-typed like IntentClassifier.predict
        from services.nlp.classifier import Prediction

        probabilities = self.pipeline.predict_proba([text])[0]
        best = int(np.argmax(probabilities))
        label = str(self.pipeline.classes_[best])
        oos = label == OUT_OF_SCOPE or probabilities[best] < self.threshold
        return Prediction(OUT_OF_SCOPE if oos else label, float(probabilities[best]), oos)


def banking77(data: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    with (data / "banking77" / "train.csv").open(newline="") as handle:
        rows = [(r["text"], r["category"]) for r in csv.DictReader(handle)]
    texts, labels = zip(*rows, strict=True)
    tr_x, va_x, tr_y, va_y = train_test_split(list(texts), list(labels), test_size=0.1, random_state=0,
                                              stratify=list(labels))
    return tr_x, tr_y, va_x, va_y


def clinc150(data: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    raw = json.loads((data / "clinc150" / "data_full_trainval.json").read_text())

    def split(*keys: str) -> tuple[list[str], list[str]]:
        rows = [row for key in keys for row in raw[key]]
        return [t for t, _ in rows], [OUT_OF_SCOPE if label == "oos" else label for _, label in rows]

    tr_x, tr_y = split("train", "oos_train")
    va_x, va_y = split("val", "oos_val")
    return tr_x, tr_y, va_x, va_y


def run(name: str, split: tuple[list[str], list[str], list[str], list[str]], models: set[str]) -> None:
    tr_x, tr_y, va_x, va_y = split
    print(f"\n## {name}: train {len(tr_x)}, validation {len(va_x)}")
    results = {}
    builders = {
        "supportbot tuned": lambda: IntentClassifier.train(tr_x, tr_y, name=name, tuning=TuningOptions()),
        "supportbot shared": lambda: IntentClassifier.train(tr_x, tr_y, name=name),
        "tfidf+lr baseline": lambda: Baseline(tr_x, tr_y),
    }
    for label, build in builders.items():
        if label.split()[-1] not in models and label != "tfidf+lr baseline":
            continue
        started = time.perf_counter()
        model = build()
        train_s = time.perf_counter() - started
        if isinstance(model, IntentClassifier):
            print(f"{label}: encoder {(model.meta['encoder'] or {}).get('name')}, "
                  f"held-out accuracy of each candidate {model.meta['encoder_choice']}", flush=True)
        if isinstance(model, Baseline) and OUT_OF_SCOPE in tr_y:
            model.threshold = 0.5  # a common max-probability rule for the baseline
        result = evaluate(model, va_x, va_y)  # type: ignore[arg-type]
        result["train_s"] = round(train_s, 1)
        results[label] = result
        if isinstance(model, IntentClassifier):
            print(f"{label}: latency plan here {result['latency_plan']}, fast path {model.meta['fast_path']}")
            if model.plan != FULL:
                model.plan = FULL
                results[f"{label}, full model"] = {**evaluate(model, va_x, va_y), "train_s": round(train_s, 1)}
            model.plan = AVX2_PLAN
            results[f"{label}, AVX2 plan"] = {**evaluate(model, va_x, va_y), "train_s": round(train_s, 1)}
            p50, p99, share = projected_avx2_ms(model, va_x)
            print(f"{label}, AVX2 plan {AVX2_PLAN}: {share:.1%} answered by words alone; projected on the AVX2 "
                  f"host: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
    keys = ["accuracy", "macro_f1", "in_scope_accuracy", "out_of_scope_recall", "p50_ms", "p99_ms", "train_s"]
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for label, result in results.items():
        print(f"| {label} | " + " | ".join(str(result.get(k, "–")) for k in keys) + " |")
    base = results["tfidf+lr baseline"]
    for label, ours in results.items():
        if label != "tfidf+lr baseline":
            print(f"ratio {label}/baseline: accuracy {ours['accuracy'] / base['accuracy']:.3f}, "
                  f"p50 latency {ours['p50_ms'] / base['p50_ms']:.2f}, training time {ours['train_s'] / base['train_s']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--only", choices=["banking77", "clinc150"])
    parser.add_argument("--encoders", default="tuned,shared",
                        help="supportbot variants to train: tuned (fine-tuned encoder, the CLI default), shared")
    args = parser.parse_args()
    models = set(args.encoders.split(","))
    if args.only in (None, "banking77"):
        run("BANKING77", banking77(args.data), models)
    if args.only in (None, "clinc150"):
        run("CLINC150", clinc150(args.data), models)


if __name__ == "__main__":
    main()
