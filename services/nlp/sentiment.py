"""Sentiment and frustration: VADER (its lexicon ships in the `vaderSentiment` wheel) for English and languages
without a lexicon of ours; for Japanese a lexicon of dictionary forms over MeCab's analysis, with negation
("良くない", and "届かない" for what should work) and intensifiers; for German, French, Spanish, Italian, Dutch
and Portuguese the lexicons of `supportbot/data/sentiment/european.yaml`, with the same rules. All on VADER's
scale and normalised as VADER does."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from functools import cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.nlp.tokens import SYMBOLS, Morpheme, morphemes
from supportbot.contracts.nlp import Sentiment
from supportbot.resources import DATA_DIR

EUROPEAN_LEXICONS = DATA_DIR / "sentiment" / "european.yaml"
_N_SCALAR = -0.74  # VADER's factor for a negated word
_BOOST = 1.3
_WORD = re.compile(r"[^\W\d_]+")

# Valence of Japanese dictionary forms (MeCab lemmas), on VADER's -4..4 scale.
_JA_VALENCE: dict[str, float] = {
    "有り難う": 2.0, "助かる": 2.0, "嬉しい": 2.5, "素晴らしい": 3.0, "最高": 3.0, "満足": 2.0, "良い": 1.5,
    "便利": 1.5, "感謝": 2.5, "解決": 1.5, "丁寧": 1.5, "親切": 2.0, "完璧": 3.0, "安心": 1.5, "好き": 2.0,
    "最悪": -3.5, "酷い": -3.0, "怒る": -3.0, "ふざける": -3.0, "不満": -2.5, "遅い": -1.5, "困る": -2.0,
    "残念": -2.0, "壊れる": -2.0, "詐欺": -3.5, "がっかり": -2.5, "不良": -2.0, "問題": -1.0, "不便": -1.5,
    "迷惑": -2.5, "面倒": -1.5, "遅れる": -1.0, "悪い": -2.0, "嫌": -2.0, "不愉快": -3.0, "失望": -2.5,
    "呆れる": -2.5, "うんざり": -3.0, "いらいら": -2.5, "苛々": -2.5, "不具合": -1.5, "故障": -1.5,
}
# What a customer expects to work: negated ("届かない", "ログインできません") it is a complaint.
_JA_EXPECTED = {"届く": -1.5, "出来る": -1.5, "動く": -1.5, "繋がる": -1.5, "使う": -1.5, "来る": -1.0,
                "開く": -1.0, "直る": -1.5, "返る": -1.0, "戻る": -1.0, "分かる": -1.0, "返事": -1.5, "返信": -1.5,
                "連絡": -1.0, "回答": -1.0}
_JA_PHRASES = {"腹が立": -3.0, "いい加減に": -3.0, "二度と": -2.5, "返金しろ": -2.5, "どうなって": -1.5}
_JA_NEGATORS = {"ない", "無い", "ず", "ぬ"}
_JA_INTENSIFIERS = {"本当": 1.3, "とても": 1.3, "全然": 1.3, "全く": 1.3, "凄い": 1.3, "非常": 1.3, "マジ": 1.3,
                    "まじ": 1.3, "大変": 1.3, "何度": 1.3}
_NEGATION_SCOPE = 5  # morphemes after a word that a negation of it may sit in ("満足 し て い ませ ん")


def _ja_compound(text: str) -> float:
    """VADER-style compound score of Japanese text: lexicon lemmas, negation by ない/ず, intensifiers."""
    analysed = morphemes(text)
    total = sum(weight for phrase, weight in _JA_PHRASES.items() if phrase in text)
    for i, morpheme in enumerate(analysed):
        valence = _JA_VALENCE.get(morpheme.lemma)
        expected = _JA_EXPECTED.get(morpheme.lemma)
        if valence is None and expected is None:
            continue
        if _negated(analysed, i):
            valence = expected if expected is not None else -0.5 * (valence or 0.0)
        elif valence is None:
            continue
        boost = max((_JA_INTENSIFIERS.get(m.lemma, 1.0) for m in analysed[max(0, i - 3):i]), default=1.0)
        total += valence * boost
    if total < 0:
        total -= 0.3 * (text.count("！") + text.count("!"))
    return _normalized(total)


def _negated(analysed: list[Morpheme], i: int) -> bool:
    """A negator follows word i within the scope, before punctuation, and is not a request ("〜ませんか")."""
    for j in range(i + 1, min(len(analysed), i + 1 + _NEGATION_SCOPE)):
        morpheme = analysed[j]
        if morpheme.pos in SYMBOLS or (morpheme.pos in {"名詞", "形容詞"} and morpheme.lemma not in _JA_NEGATORS):
            return False
        if morpheme.lemma in _JA_NEGATORS:
            after = analysed[j + 1] if j + 1 < len(analysed) else None
            return not (after is not None and after.surface == "か")
    return False


_CLAUSE = re.compile(r"[.,;:!?¿¡()\n]+")
_EMOJI = {"😊": 2.0, "🙂": 1.5, "😀": 2.0, "😃": 2.0, "😍": 3.0, "👍": 2.0, "❤": 2.5, "🙏": 1.5,
          "😡": -3.0, "😠": -2.5, "🤬": -3.5, "👎": -2.5, "😤": -2.5, "😞": -2.0, "😢": -2.0, "🙄": -1.5}


@dataclass(frozen=True)
class _Lexicon:
    words: dict[str, float]
    expected: dict[str, float]
    negators: frozenset[str]
    boosters: frozenset[str]
    phrases: tuple[tuple[re.Pattern[str], float], ...]


def _fold(word: str) -> str:
    """Lower case without accents: customers often type "decu" for "déçu"."""
    return "".join(c for c in unicodedata.normalize("NFKD", word.lower()) if not unicodedata.combining(c))


@cache
def _european_lexicons() -> dict[str, _Lexicon]:
    import yaml

    raw = yaml.safe_load(EUROPEAN_LEXICONS.read_text(encoding="utf-8"))
    return {language: _Lexicon(words={_fold(w): float(v) for w, v in entry["words"].items()},
                               expected={_fold(w): -1.5 for w in entry["expected"]},
                               negators=frozenset(_fold(w) for w in entry["negators"]),
                               boosters=frozenset(_fold(w) for w in entry["boosters"]),
                               phrases=tuple((re.compile(_fold(p)), float(v))
                                             for p, v in entry.get("phrases", {}).items()))
            for language, entry in raw.items()}


def _lexicon_compound(text: str, lexicon: _Lexicon) -> float:
    """VADER-style compound of `text` by a lexicon. Within a clause, a negator up to three words before flips a
    word; an expected word ("funktioniert", "reçu") with a negator up to three words before or two after counts
    as a complaint; a booster right before intensifies. Set phrases, emoji, exclamation marks and shouting add
    to the total."""
    folded = _fold(text)
    total = sum(valence for pattern, valence in lexicon.phrases if pattern.search(folded))
    total += sum(valence * text.count(emoji) for emoji, valence in _EMOJI.items())
    for clause in _CLAUSE.split(folded):
        words = _WORD.findall(clause)
        for i, word in enumerate(words):
            negated = any(w in lexicon.negators for w in words[max(0, i - 3):i])
            if word in lexicon.expected and (negated or any(w in lexicon.negators for w in words[i + 1:i + 3])):
                total += lexicon.expected[word]
                continue
            valence = lexicon.words.get(word)
            if valence is None:
                continue
            if negated:
                valence *= _N_SCALAR
            if i and words[i - 1] in lexicon.boosters:
                valence *= _BOOST
            total += valence
    if _shouting(text):
        total -= 1.5
    if total < 0:
        total -= 0.3 * min(text.count("!"), 3)
    return _normalized(total)


def _normalized(total: float) -> float:
    """A sum of valences mapped into -1..1 as VADER maps it (alpha 15)."""
    return total / math.sqrt(total * total + 15) if total else 0.0


def _shouting(text: str) -> bool:
    letters = [c for c in text if c.isalpha() and c.isascii()]
    return len(letters) >= 8 and sum(c.isupper() for c in letters) / len(letters) > 0.7


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
        lexicon = _european_lexicons().get(language)
        if language == "ja":
            score = _ja_compound(text)
        elif lexicon is not None:
            score = _lexicon_compound(text, lexicon)
        else:
            score = self._vader.polarity_scores(text)["compound"]
        shouting = _shouting(text)
        exclamations = min(text.count("!") + text.count("！"), 3)
        frustration = max(0.0, -score)
        if frustration > 0 or shouting:
            frustration = min(1.0, frustration + 0.1 * exclamations + (0.2 if shouting else 0.0))
        return Sentiment(score=round(score, 4), label=_label(score), frustration=round(frustration, 4))
