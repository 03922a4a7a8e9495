"""The fast one-utterance TF-IDF row equals scikit-learn's."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from services.nlp import tokens
from services.nlp.classifier import normalize
from services.nlp.features import tfidf_row

CORPUS = ["Where is my order?", "where is my parcel, order ORD-1", "注文した商品がまだ届きません", "返金してください",
          "I want a refund for my order", "refund refund refund"]


@pytest.mark.parametrize("vectorizer", [
    TfidfVectorizer(preprocessor=normalize, analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True),
    TfidfVectorizer(preprocessor=normalize, tokenizer=tokens.words, token_pattern=None, ngram_range=(1, 2),
                    sublinear_tf=True),
    TfidfVectorizer(ngram_range=(1, 2)),
], ids=["chars", "words", "plain"])
@pytest.mark.parametrize("text", ["Where is my refund?", "refund refund order", "まだ届かない", "zzz", ""])
def test_row_equals_transform(vectorizer: TfidfVectorizer, text: str) -> None:
    vectorizer.fit(CORPUS)
    expected = vectorizer.transform([text]).toarray()[0]
    columns, values = tfidf_row(vectorizer, text)
    got = np.zeros_like(expected)
    got[columns] = values
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
