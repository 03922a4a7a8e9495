"""Language identification: script detection for Japanese (and other CJK), function words for the main
European languages when they are unambiguous (microseconds), langdetect's n-gram profiles otherwise."""

from __future__ import annotations

import re

from langdetect import DetectorFactory, LangDetectException, detect_langs

DetectorFactory.seed = 0  # langdetect is random by default; make it repeatable

_KANA = re.compile(r"[\u3040-\u30ff\uff66-\uff9f]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_LATIN_WORD = re.compile(r"[A-Za-zÀ-ÿ]+")
_FUNCTION_WORDS: dict[str, frozenset[str]] = {lang: frozenset(words.split()) for lang, words in {
    "en": "the and is are was were you your my i it this that have has what where when how why with for of "
          "to not can could would please me we our do does did will",
    "de": "der die das und ist sind ich du sie mein meine ihr nicht ein eine mit für wo wann wie warum bitte "
          "habe hat kann können ist noch auf zu",
    "fr": "le la les et est sont je tu vous mon ma mes pas un une avec pour où quand comment pourquoi "
          "ai avez peux pouvez ne de du des que",
    "es": "el la los las y es son yo tú usted mi mis no un una con para dónde cuándo cómo por qué "
          "tengo puedo puede está del que",
    "it": "il lo la gli le e è sono io tu lei mio mia non un una con per dove quando come perché ho "
          "posso può del che",
    "nl": "de het een en is zijn ik jij u mijn niet met voor waar wanneer hoe waarom heb kan kunnen van dat",
    "pt": "o a os as e é são eu você meu minha não um uma com para onde quando como porque tenho posso "
          "pode do da que",
}.items()}


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
    lowered = [w.lower() for w in words]
    hits = sorted(((sum(w in vocab for w in lowered), lang) for lang, vocab in _FUNCTION_WORDS.items()),
                  reverse=True)
    if hits[0][0] >= 2 and hits[0][0] >= 2 * hits[1][0]:
        return hits[0][1]
    if len(words) < 5:  # too short for character n-gram statistics to beat the default
        return default
    try:
        best = detect_langs(text)[0]
    except LangDetectException:
        return default
    code = best.lang.split("-")[0]
    return code if best.prob >= 0.7 else default
