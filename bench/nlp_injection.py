"""The prompt-injection score on labelled attacks and look-alike customer messages, and its false alarms on
the public intent datasets.

`supportbot/data/injection/examples.csv` (what the detector trains on, and what the hand-written signals
were adjusted on) and `bench/data/injection_test.csv` (never trained or tuned on) each hold 200 attacks
(override, extraction, role play, fake delimiters, claimed authority, policy orders, obfuscated and
indirect ones; en, ja, de, fr, es, it, nl) and 200 benign messages, most of them using the same words
innocently ("please ignore my previous message", "what's your system for returns?"). The public datasets
(BANKING77, CLINC150, HWU64, Bitext: 42k customer utterances the detector never saw) say how often
ordinary traffic is flagged. The signals alone, the regression alone and the shipped score (the higher of
the two) are reported side by side, and the shipped score once more without the sentence embedding (as it
was before USE multilingual was added, and as it is where that encoder is not installed).

    python bench/nlp_injection.py [--data ../shared/data] [--threshold 0.5]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.nlp.injection import (  # noqa: E402
    INJECTION_EXAMPLES_CSV,
    PROBABILITY_AT_HALF,
    InjectionDetector,
    signal_score,
)
from services.nlp.multilingual_encoder import load_multilingual_encoder  # noqa: E402

TEST_CSV = Path(__file__).resolve().parent / "data" / "injection_test.csv"


def labelled(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def public(data: Path) -> dict[str, list[str]]:
    def column(path: Path, key: str) -> list[str]:
        with path.open(newline="", encoding="utf-8") as handle:
            return [row[key] for row in csv.DictReader(handle)]

    clinc = json.loads((data / "clinc150" / "data_full_trainval.json").read_text())
    return {
        "BANKING77 train": column(data / "banking77" / "train.csv", "text"),
        "CLINC150 train+val+oos": [t for k in ("train", "val", "oos_train", "oos_val") for t, _ in clinc[k]],
        "HWU64 train+val": column(data / "hwu64" / "train.csv", "text") + column(data / "hwu64" / "val.csv", "text"),
        "Bitext instructions": column(data / "bitext_customer_support" / "bitext_customer_support_train.csv",
                                      "instruction"),
    }


def report(name: str, rows: list[dict[str, str]], score: Callable[[str], float], threshold: float) -> None:
    caught: Counter[str] = Counter()
    total: Counter[str] = Counter()
    false_alarms = 0
    benign = 0
    for row in rows:
        flagged = score(row["text"]) >= threshold
        if row["label"] == "injection":
            for key in ("all", f"technique {row['technique']}", f"language {row['language']}"):
                caught[key] += flagged
                total[key] += 1
        else:
            benign += 1
            false_alarms += flagged
    print(f"{name}: recall {caught['all']}/{total['all']} = {caught['all'] / total['all']:.3f}, "
          f"false alarms {false_alarms}/{benign} = {false_alarms / benign:.3f}")
    print(" ".join(f"{key.split(' ', 1)[1]} {caught[key]}/{total[key]}" for key in sorted(total) if key != "all"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    detector = InjectionDetector.from_shipped_data(encoder=load_multilingual_encoder())
    scores: dict[str, Callable[[str], float]] = {
        "signals": signal_score,
        f"regression (0.5 at P = {PROBABILITY_AT_HALF})": detector.regression_score,
        "shipped score": detector.score,
        "shipped score without the embedding": InjectionDetector.from_shipped_data().score,
    }
    datasets = public(args.data)
    for label, score in scores.items():
        print(f"\n## {label}, threshold {args.threshold}")
        report("examples (trained/tuned on)", labelled(INJECTION_EXAMPLES_CSV), score, args.threshold)
        report("test (never seen)", labelled(TEST_CSV), score, args.threshold)
        flagged = {name: sum(score(text) >= args.threshold for text in texts) for name, texts in datasets.items()}
        print("false alarms on public data: " + ", ".join(f"{n} {f}/{len(datasets[n])}" for n, f in flagged.items()))


if __name__ == "__main__":
    main()
