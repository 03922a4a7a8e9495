"""Language identification: script detection for Japanese (and other CJK), langdetect for the rest."""

from __future__ import annotations

import re

from langdetect import DetectorFactory, LangDetectException, detect_langs

DetectorFactory.seed = 0  # langdetect is random by default; make it repeatable

_KANA = re.compile(r"[\u3040-\u30ff\uff66-\uff9f]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_LATIN_WORD = re.compile(r"[A-Za-zÀ-ÿ]+")


def detect_language(text: str, default: str = "en") -> str:
    """An ISO 639-1 code; short Latin-script messages fall back to `default`."""
    if _KANA.search(text):
        return "ja"
    if _HANGUL.search(text):
        return "ko"
    if _HAN.search(text) and not _LATIN_WORD.search(text):
        return "zh"
    words = _LATIN_WORD.findall(text)
    if len(words) < 3:
        return default
    try:
        best = detect_langs(text)[0]
    except LangDetectException:
        return default
    code = best.lang.split("-")[0]
    return code if best.prob >= 0.7 else default
