"""Language identification on short support-chat messages: supportbot's detector side by side with
py3langid as it comes (97 languages, no prior) and, where installed, langdetect.

`bench/data/language_holdout.csv` holds 480 messages, 40 in each of en, de, fr, es, it, nl, pt, pl, sv, da,
fi and ja: a quarter of them one to three words ("hola", "bestelling kwijt"), some without accents, with
typos, order numbers and English product words. A second check counts how many of 36 very short English
messages ("ok", "help", "refund") come out as English, the default language.

    python bench/nlp_language.py
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.nlp.language import detect_language  # noqa: E402

HOLDOUT = Path(__file__).resolve().parent / "data" / "language_holdout.csv"
SHORT_ENGLISH = ["hi", "ok", "thanks", "help", "cancel", "refund", "yes", "no", "bye", "hello", "agent", "human",
                 "order status", "track order", "ORD-55201", "#48213", "thx", "ty", "pls help", "hey there",
                 "okay thanks", "sure", "what?", "hmm", "return", "invoice", "login", "password", "cool",
                 "great thanks", "nope", "yep", "sorry", "wait", "done", "got it"]


def systems() -> dict[str, Callable[[str], str]]:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    plain = LanguageIdentifier.from_model_file(MODEL_FILE)
    found: dict[str, Callable[[str], str]] = {"supportbot": detect_language,
                                               "py3langid, all languages": lambda text: plain.classify(text)[0]}
    try:
        from langdetect import DetectorFactory, LangDetectException, detect

        DetectorFactory.seed = 0

        def langdetect(text: str) -> str:
            try:
                return detect(text).split("-")[0]
            except LangDetectException:
                return "en"

        found["langdetect"] = langdetect
    except ImportError:
        pass
    return found


def main() -> None:
    with HOLDOUT.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    languages = sorted({row["language"] for row in rows})
    print(f"{len(rows)} messages; accuracy overall, by length in words, by language; latency per message\n")
    print("| detector | all | 1–3 words | 4–8 | 9+ | short English | p50 ms | p99 ms | " + " | ".join(languages) + " |")
    print("|---" * (len(languages) + 9) + "|")
    for name, detect in systems().items():
        detect(rows[0]["text"])  # loads the model
        right: Counter[str] = Counter()
        total: Counter[str] = Counter()
        latencies: list[float] = []
        for row in rows:
            words = len(row["text"].split())
            bucket = "1–3" if words <= 3 else "4–8" if words <= 8 else "9+"
            started = time.perf_counter()
            ok = detect(row["text"]) == row["language"]
            latencies.append((time.perf_counter() - started) * 1000)
            for key in ("all", bucket, row["language"]):
                right[key] += ok
                total[key] += 1
        english = sum(detect(text) == "en" for text in SHORT_ENGLISH)
        share = {key: f"{right[key] / total[key]:.3f}" for key in total}
        print(f"| {name} | {share['all']} | {share['1–3']} | {share['4–8']} | {share['9+']} | "
              f"{english}/{len(SHORT_ENGLISH)} | {statistics.median(latencies):.3f} | "
              f"{sorted(latencies)[int(0.99 * len(latencies))]:.3f} | "
              + " | ".join(share[language] for language in languages) + " |")


if __name__ == "__main__":
    main()
