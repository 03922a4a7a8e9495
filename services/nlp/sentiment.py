"""Sentiment and frustration: VADER (its lexicon ships in the `vaderSentiment` wheel) plus a Japanese lexicon."""

from __future__ import annotations

import math
import re

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from supportbot.contracts.nlp import Sentiment

# Polarity of common Japanese customer-support words, on VADER's -4..4 valence scale.
_JA_LEXICON: dict[str, float] = {
    "ありがとう": 2.0, "助かり": 2.0, "嬉しい": 2.5, "うれしい": 2.5, "素晴らしい": 3.0, "最高": 3.0,
    "満足": 2.0, "良い": 1.5, "いい": 1.0, "便利": 1.5, "感謝": 2.5, "解決": 1.5,
    "最悪": -3.5, "ひどい": -3.0, "酷い": -3.0, "怒": -3.0, "腹が立": -3.0, "ふざけ": -3.0, "不満": -2.5,
    "遅い": -1.5, "届かない": -1.5, "困って": -2.0, "困る": -2.0, "残念": -2.0, "壊れ": -2.0, "詐欺": -3.5,
    "返金しろ": -2.5, "いい加減": -3.0, "二度と": -2.5, "がっかり": -2.5, "不良": -2.0, "問題": -1.0,
}
_JA_NEGATION = re.compile(r"(ない|ません|なかった)")


def _ja_compound(text: str) -> float:
    total = sum(weight * text.count(word) for word, weight in _JA_LEXICON.items())
    if total > 0 and _JA_NEGATION.search(text) and not any(w in text for w in ("届かない", "困って")):
        total *= -0.5
    total += -0.3 * text.count("！") - 0.3 * text.count("!") if total < 0 else 0.0
    return total / math.sqrt(total * total + 15) if total else 0.0


def _label(score: float) -> str:
    if score >= 0.05:
        return "positive"
    if score <= -0.05:
        return "negative"
    return "neutral"


class SentimentAnalyzer:
    """Scores text from -1 to 1 and derives a frustration level from 0 to 1."""

    def __init__(self) -> None:
        self._vader = SentimentIntensityAnalyzer()

    def analyze(self, text: str, language: str) -> Sentiment:
        score = _ja_compound(text) if language == "ja" else self._vader.polarity_scores(text)["compound"]
        letters = [c for c in text if c.isalpha() and c.isascii()]
        shouting = len(letters) >= 8 and sum(c.isupper() for c in letters) / len(letters) > 0.7
        exclamations = min(text.count("!") + text.count("！"), 3)
        frustration = max(0.0, -score)
        if frustration > 0 or shouting:
            frustration = min(1.0, frustration + 0.1 * exclamations + (0.2 if shouting else 0.0))
        return Sentiment(score=round(score, 4), label=_label(score), frustration=round(frustration, 4))
