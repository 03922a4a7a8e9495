"""Scoring an intent model on a labelled CSV: accuracy, macro-F1, per-class figures and latency."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

from services.nlp.classifier import OUT_OF_SCOPE, IntentClassifier


def evaluate(model: IntentClassifier, texts: list[str], labels: list[str]) -> dict[str, Any]:
    """Predict one utterance at a time (as the service does) and score the predictions.

    A gold `out_of_scope` row is right when the model rejects it, by its threshold or its own class.
    """
    predictions: list[str] = []
    latencies_ms: list[float] = []
    model.predict(texts[0])  # warm-up: first-call allocations are not inference latency
    for text in texts:
        started = time.perf_counter()
        prediction = model.predict(text)
        latencies_ms.append((time.perf_counter() - started) * 1000)
        predictions.append(OUT_OF_SCOPE if prediction.out_of_scope else prediction.intent)
    gold = np.array(labels)
    predicted = np.array(predictions)
    classes = sorted(set(labels) | set(predictions))
    precision, recall, _, support = precision_recall_fscore_support(gold, predicted, labels=classes,
                                                                    zero_division=0)
    in_scope = gold != OUT_OF_SCOPE
    result: dict[str, Any] = {
        "n": len(texts),
        "accuracy": round(float((gold == predicted).mean()), 4),
        "macro_f1": round(float(f1_score(gold, predicted, labels=sorted(set(labels)), average="macro",
                                         zero_division=0)), 4),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 3),
        "per_class": {
            label: {"precision": round(float(p), 4), "recall": round(float(r), 4), "support": int(s)}
            for label, p, r, s in zip(classes, precision, recall, support, strict=True) if s or p
        },
    }
    plan = getattr(model, "plan", None)  # the baselines benchmarked beside it have none
    if plan is not None:
        result["latency_plan"] = plan.describe()
    if (~in_scope).any():
        result["in_scope_accuracy"] = round(float((gold[in_scope] == predicted[in_scope]).mean()), 4)
        result["out_of_scope_recall"] = round(float((predicted[~in_scope] == OUT_OF_SCOPE).mean()), 4)
    return result


def format_report(result: dict[str, Any]) -> str:
    lines = [f"n={result['n']}  accuracy={result['accuracy']:.4f}  macro_f1={result['macro_f1']:.4f}  "
             f"p50={result['p50_ms']:.2f} ms  p99={result['p99_ms']:.2f} ms"]
    plan = result.get("latency_plan")
    if plan and (plan["words_first"] or plan["max_tokens"]):
        cut = f"encoder input cut to {plan['max_tokens']} tokens" if plan["max_tokens"] else "encoder input not cut"
        lines.append(f"latency plan for this CPU: words first {'on' if plan['words_first'] else 'off'}, {cut}")
    if "out_of_scope_recall" in result:
        lines.append(f"in-scope accuracy={result['in_scope_accuracy']:.4f}  "
                     f"out-of-scope recall={result['out_of_scope_recall']:.4f}")
    return "\n".join(lines)
