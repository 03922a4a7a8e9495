"""The shipped default intents, scored on messages written apart from them, by language.

`bench/data/default_intents_holdout.csv` holds 744 customer messages (12 English and 12 Japanese for each of
the 30 intents and out_of_scope) written independently of `supportbot/data/intents/default.csv`, in other
styles: typos, long context before the request, casual Japanese and keigo, order numbers and amounts. The
model is trained exactly as the nlp service trains its default model, next to the TF-IDF + logistic-
regression baseline on the same CSV, and the same model once more with its words-only fast path on, as a CPU
too slow for its encoder runs it (`services.nlp.latency`).

`bench/data/default_intents_european.csv` holds 372 more, in six languages the intents have no training rows
for (German, French, Spanish, Italian, Dutch, Portuguese; 2 per language and intent), written apart from
both files: what the default model makes of customers whose language it was never shown.

    python bench/nlp_default_intents.py [--plain-japanese-words]

`--plain-japanese-words` splits Japanese on word characters as before MeCab segmentation was added (a whole
clause then is one "word"), to show what segmentation is worth.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nlp_intents import Baseline  # noqa: E402 - this folder's intent benchmark, run as a script beside it
from services.nlp import tokens  # noqa: E402
from services.nlp.classifier import OUT_OF_SCOPE, IntentClassifier, read_examples  # noqa: E402
from services.nlp.encoder import load_encoder  # noqa: E402
from services.nlp.evaluation import evaluate  # noqa: E402
from services.nlp.language import detect_language  # noqa: E402
from services.nlp.latency import LatencyPlan  # noqa: E402
from supportbot.resources import DEFAULT_INTENTS_CSV  # noqa: E402

HOLDOUT = Path(__file__).resolve().parent / "data" / "default_intents_holdout.csv"
EUROPEAN = Path(__file__).resolve().parent / "data" / "default_intents_european.csv"
EUROPEAN_LANGUAGES = ("de", "fr", "es", "it", "nl", "pt")
KEYS = ["accuracy", "in_scope_accuracy", "out_of_scope_recall", "macro_f1", "p50_ms", "p99_ms"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--plain-japanese-words", action="store_true")
    args = parser.parse_args()
    if args.plain_japanese_words:
        tokens.words = re.compile(r"\b\w+\b").findall
    texts, labels = read_examples(DEFAULT_INTENTS_CSV)
    test_texts, test_labels = read_examples(HOLDOUT)
    european_texts, european_labels = read_examples(EUROPEAN)
    started = time.perf_counter()
    models = {"supportbot default": IntentClassifier.train(texts, labels, name="default")}
    print(f"supportbot default model trained in {time.perf_counter() - started:.1f} s on {len(texts)} rows")
    print(f"its words-only fast path: {models['supportbot default'].meta['fast_path']}")
    # The same model as a CPU too slow for its encoder runs it (services.nlp.latency): words first.
    words_first = copy.copy(models["supportbot default"])
    words_first.plan = LatencyPlan(words_first=True)
    models["supportbot default, words first"] = words_first
    # Side by side: the model as it was while MiniLM was the only shared encoder.
    models["supportbot, MiniLM only"] = IntentClassifier.train(texts, labels, name="minilm", encoders=[load_encoder()])
    baseline = Baseline(texts, labels)
    baseline.threshold = 0.5  # a common max-probability rule
    models["tfidf+lr baseline"] = baseline
    print(f"sentence encoder: {models['supportbot default'].meta['encoder']}, held-out accuracy of each "
          f"candidate: {models['supportbot default'].meta['encoder_choice']}")
    print("| model | language | n | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 3) + "|")
    for name, model in models.items():
        by_language(name, model, test_texts, test_labels, ("en", "ja"))
    print("\nLanguages without training rows (`default_intents_european.csv`, grouped by the detected language):")
    print("| model | language | n | " + " | ".join(KEYS) + " |")
    print("|---" * (len(KEYS) + 3) + "|")
    for name, model in models.items():
        by_language(name, model, european_texts, european_labels, EUROPEAN_LANGUAGES)
    wrong = [(t, y, models["supportbot default"].predict(t)) for t, y in zip(test_texts, test_labels, strict=True)]
    errors = [(t, y, OUT_OF_SCOPE if p.out_of_scope else p.intent) for t, y, p in wrong
              if (OUT_OF_SCOPE if p.out_of_scope else p.intent) != y]
    print(f"\nsupportbot default: {len(errors)} errors; the first 15 (text | gold → predicted):")
    for text, gold, predicted in errors[:15]:
        print(f"  {text[:70]} | {gold} → {predicted}")


def by_language(name: str, model: object, texts: list[str], labels: list[str], languages: tuple[str, ...]) -> None:
    """One table row per detected language, and one for all the messages."""
    detected = [detect_language(text) for text in texts]
    for language in (*languages, "all"):
        rows = [i for i, lang in enumerate(detected) if language == "all" or lang == language]
        result = evaluate(model, [texts[i] for i in rows], [labels[i] for i in rows])  # type: ignore[arg-type]
        print(f"| {name} | {language} | {len(rows)} | " + " | ".join(str(result.get(k, "–")) for k in KEYS) + " |")


if __name__ == "__main__":
    main()
