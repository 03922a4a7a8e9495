"""Word tokens for the intent classifier: Japanese segmented by MeCab, other scripts split on word characters.

Japanese has no spaces, so `\\w+` would make a whole clause one "word". Text with Japanese in it goes through
MeCab (fugashi) with the UniDic-lite dictionary, both installed from PyPI with nothing to download, and each
word becomes its dictionary form (lemma): 届きません and 届かない share 届く, ほしい and 欲しい share 欲しい.
Symbols and whitespace are dropped; particles and auxiliaries are kept, since "届か ない" (not delivered) is
the point of many support messages and the classifier sees word bigrams.
"""

from __future__ import annotations

import re
import threading
from typing import NamedTuple

import fugashi

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")
_WORD = re.compile(r"\b\w+\b")
SYMBOLS = frozenset({"補助記号", "空白", "記号"})  # UniDic's first-level parts of speech for symbols and spaces
_local = threading.local()  # a MeCab tagger is not to be shared between threads


class Morpheme(NamedTuple):
    surface: str
    lemma: str  # dictionary form; the surface where the dictionary has none
    pos: str  # UniDic's first-level part of speech: 名詞, 動詞, 助動詞, 補助記号, …


def morphemes(text: str) -> list[Morpheme]:
    """MeCab's analysis of (Japanese) `text`, symbols and whitespace left in."""
    analysed: list[Morpheme] = []
    for word in _tagger()(text):
        feature = word.feature
        lemma = getattr(feature, "lemma", None)
        # UniDic writes loanwords' lemmas with their origin, "キャンセル-cancel"; unknown words have none.
        lemma = lemma.split("-", 1)[0] if lemma and lemma != "*" else word.surface
        analysed.append(Morpheme(word.surface, lemma, feature.pos1))
    return analysed


def words(text: str) -> list[str]:
    """The word tokens of `text` (expected already normalised: NFKC and lower case)."""
    if not _JAPANESE.search(text):
        return _WORD.findall(text)
    return [m.lemma for m in morphemes(text) if m.pos not in SYMBOLS]


def _tagger() -> fugashi.Tagger:
    tagger = getattr(_local, "tagger", None)
    if tagger is None:
        tagger = _local.tagger = fugashi.Tagger()
    return tagger
