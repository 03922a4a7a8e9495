"""One utterance's TF-IDF row, without scikit-learn's per-call overhead.

`TfidfVectorizer.transform([text])` validates, builds a sparse matrix and normalises through generic code:
about 0.4 ms for one short message, more than the encoder's share of the budget. `tfidf_row` computes the
same row (same analyzer, vocabulary, idf, sublinear tf and l2 norm) in tens of microseconds; the classifier
and the injection detector use it to predict one message at a time.
"""

from __future__ import annotations

import math
import weakref
from collections import Counter
from collections.abc import Callable

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

_analyzers: weakref.WeakKeyDictionary[TfidfVectorizer, Callable[[str], list[str]]] = weakref.WeakKeyDictionary()


def tfidf_row(vectorizer: TfidfVectorizer, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(column indices, values) of `vectorizer.transform([text])`'s only row, in no particular order."""
    if vectorizer.norm != "l2" or vectorizer.binary or not vectorizer.use_idf:
        row = vectorizer.transform([text])
        return row.indices, row.data
    analyzer = _analyzers.get(vectorizer)
    if analyzer is None:
        analyzer = _analyzers[vectorizer] = vectorizer.build_analyzer()
    vocabulary = vectorizer.vocabulary_
    counts = Counter(column for term in analyzer(text) if (column := vocabulary.get(term)) is not None)
    if not counts:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    columns = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
    if vectorizer.sublinear_tf:
        tf = 1.0 + np.log(tf)
    values = tf * vectorizer.idf_[columns]
    norm = math.sqrt(float(values @ values))
    return columns, (values / norm).astype(np.float32) if norm else values.astype(np.float32)
