"""Sentiment in German, French, Spanish, Italian, Dutch and Portuguese: supportbot's lexicons side by side with
VADER (what these languages got before, and what a VADER-only service gives them).

`bench/data/sentiment_holdout.csv` holds 420 support-chat messages (30 negative, 20 neutral, 20 positive per
language), written apart from the lexicons and never used to adjust them; `sentiment_dev.csv` (480 more,
40/20/20) is what the lexicons' second pass was adjusted on (`--dev` scores it). Reported: three-way label
accuracy, recall of negative messages (what frustration escalation needs), and how many neutral or positive
messages come out negative.

    python bench/nlp_sentiment.py [--dev]
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.nlp.sentiment import SentimentAnalyzer  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    path = DATA / ("sentiment_dev.csv" if "--dev" in sys.argv[1:] else "sentiment_holdout.csv")
    print(path.name)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    analyzer = SentimentAnalyzer()
    scorers = {"supportbot": lambda text, language: analyzer.analyze(text, language).label,
               "VADER": lambda text, language: analyzer.analyze(text, "en").label}
    languages = sorted({row["language"] for row in rows})
    print("| scorer | language | accuracy | negatives caught | others called negative |")
    print("|---|---|---|---|---|")
    for name, score in scorers.items():
        for language in [*languages, "all"]:
            chosen = [row for row in rows if language in ("all", row["language"])]
            counts: Counter[str] = Counter()
            for row in chosen:
                label = score(row["text"], row["language"])
                counts["right"] += label == row["label"]
                if row["label"] == "negative":
                    counts["negatives"] += 1
                    counts["caught"] += label == "negative"
                else:
                    counts["others"] += 1
                    counts["false"] += label == "negative"
            print(f"| {name} | {language} | {counts['right'] / len(chosen):.3f} | "
                  f"{counts['caught']}/{counts['negatives']} | {counts['false']}/{counts['others']} |")


if __name__ == "__main__":
    main()
