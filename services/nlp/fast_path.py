"""The words-only fast path: an intent from TF-IDF alone when the words settle it, so the encoder is skipped.

A logistic regression over the intent model's own TF-IDF blocks, without the embedding block, answers an
utterance when its top probability reaches `threshold`; otherwise the full model runs. Where the sentence
encoder is too slow for the latency targets, `services.nlp.latency` turns it on: on BANKING77's validation
slice it answered 60% of utterances at the full model's accuracy (docs/benchmarks.md).

Training chooses the threshold on held-out rows (`lowest_safe_threshold`): the lowest of `THRESHOLDS` from
which upwards the fast answers are right at least as often as the full model's final answers, out-of-scope
rejection included, on the rows the fast path would take, counted apart for in-scope and out-of-scope rows:
out-of-scope recall is not traded for in-scope accuracy. When even the highest loses, the model has no fast
path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from services.nlp.classifier import LinearModel

# Never below 0.85: lower down, a tie on the calibration slice is luck. On BANKING77 (900 slice rows) 0.6 tied
# there and lost 0.9 points on the 1,001 validation rows; from 0.85 up it lost nothing on either data set.
THRESHOLDS = (0.85, 0.9, 0.95, 0.98)


@dataclass
class FastPath:
    """The words-only model (sharing the full model's vectorizers) and the top probability it answers from."""

    model: LinearModel
    threshold: float


def lowest_safe_threshold(confidence: np.ndarray, fast_correct: np.ndarray, full_correct: np.ndarray,
                          out_of_scope: np.ndarray | None = None) -> float | None:
    """The lowest threshold at which, and at every higher one, the fast path loses nothing on held-out rows.

    `confidence`: the fast model's top probability per row; `fast_correct`, `full_correct`: whether its
    answer, and the full model's, was right; `out_of_scope`: which rows are out of scope, where a loss is not
    made good by gains in scope (nor the other way round). None: the fast path loses even at the highest
    threshold.
    """
    groups = [np.ones(len(confidence), dtype=bool)] if out_of_scope is None else [out_of_scope, ~out_of_scope]
    chosen: float | None = None
    for threshold in sorted(THRESHOLDS, reverse=True):
        answered = confidence >= threshold
        if any(int(fast_correct[answered & group].sum()) < int(full_correct[answered & group].sum())
               for group in groups):
            break
        chosen = threshold
    return chosen
