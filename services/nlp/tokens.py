"""Word tokens for the intent classifier: Japanese segmented by MeCab, other scripts split on word characters.

Japanese has no spaces, so `\\w+` would make a whole clause one "word". Text with Japanese in it goes through
MeCab (fugashi) with the UniDic-lite dictionary, both PyPI wheels that need nothing downloaded, and each
word becomes its dictionary form (lemma): 届きません and 届かない share 届く, ほしい and 欲しい share 欲しい.
Symbols and whitespace are dropped; particles and auxiliaries are kept, since "届か ない" (not delivered) is
the point of many support messages and the classifier sees word bigrams.
"""

from __future__ import annotations

import re
import threading

import fugashi

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff66-\uff9f]")
_WORD = re.compile(r"\b\w+\b")
_SKIPPED = frozenset({"補助記号", "空白", "記号"})  # UniDic's first-level parts of speech for symbols and spaces
_local = threading.local()  # a MeCab tagger is not to be shared between threads


def words(text: str) -> list[str]:
    """The word tokens of `text` (expected already normalised: NFKC and lower case)."""
    if not _JAPANESE.search(text):
        return _WORD.findall(text)
    tokens: list[str] = []
    for word in _tagger()(text):
        feature = word.feature
        if feature.pos1 in _SKIPPED:
            continue
        lemma = getattr(feature, "lemma", None)
        # UniDic writes loanwords' lemmas with their origin, "キャンセル-cancel"; unknown words have none.
        tokens.append(lemma.split("-", 1)[0] if lemma and lemma != "*" else word.surface)
    return tokens


def _tagger() -> fugashi.Tagger:
    tagger = getattr(_local, "tagger", None)
    if tagger is None:
        tagger = _local.tagger = fugashi.Tagger()
    return tagger
