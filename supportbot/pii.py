"""PII redaction: typed placeholders with spans, so text can go to the LLM or to logs safely (nlp and logging use it).

Card numbers must pass the Luhn check and IBANs the ISO 13616 mod-97 check, so order numbers and other long
digit runs are not mistaken for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# `\b` and `\w` treat kana and kanji as word characters, so boundaries here are ASCII lookarounds and an address
# takes no letters of scripts written without spaces: "メールはtaro@example.jpまで" is "taro@example.jp".
_START = r"(?<![A-Za-z0-9_])"
_END = r"(?![A-Za-z0-9_])"
_ADDRESS_CHAR = (r"[^\W\u0e00-\u0eff\u1100-\u11ff\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
                 r"\U00020000-\U0003ffff]")  # a word character outside Thai/Lao, Hangul, kana and CJK
# Starting only where a run of local-part characters starts keeps the search linear on long runs without "@".
_EMAIL = re.compile(rf"(?<!{_ADDRESS_CHAR})(?<![.+-])(?:{_ADDRESS_CHAR}|[.+-])+@(?:{_ADDRESS_CHAR}|-)+"
                    rf"(?:\.(?:{_ADDRESS_CHAR}|-)+)+")
_IBAN = re.compile(_START + r"[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?" + _END)
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# After a country code the area code may be one digit: "+81-3-1234-5678" (Tokyo).
_PHONE = re.compile(r"(?<![A-Za-z0-9_#+])(?<!\d[ -])(?:\+\d{1,3}[ .-]?(?:\(?\d{1,5}\)?[ .-]?)?|\(?\d{2,5}\)?[ .-]?)?"
                    r"\d{3,4}[ .-]?\d{3,5}(?![A-Za-z0-9_])(?![ -]\d)")
# Japanese mobile numbers are often written without separators; their 070/080/090 prefix marks them.
_JP_MOBILE = re.compile(r"(?<![\d+])0[789]0\d{8}(?!\d)")
_IPV4 = re.compile(_START + r"(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)" + _END)
_JP_POSTAL = re.compile(r"〒\s?\d{3}-\d{4}")


@dataclass(frozen=True)
class Redaction:
    type: str
    start: int
    end: int


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def find_pii(text: str) -> list[Redaction]:
    """Every PII span in `text`, left to right, without overlaps (earlier, more specific types win)."""
    found: list[Redaction] = []

    def add(kind: str, start: int, end: int) -> None:
        if not any(r.start < end and start < r.end for r in found):
            found.append(Redaction(kind, start, end))

    for match in _EMAIL.finditer(text):
        add("EMAIL", *match.span())
    for match in _IBAN.finditer(text):
        if iban_valid(match.group()):
            add("IBAN", *match.span())
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            add("CARD", *match.span())
    for match in _IPV4.finditer(text):
        add("IP_ADDRESS", *match.span())
    for match in _JP_POSTAL.finditer(text):
        add("POSTAL_CODE", *match.span())
    for match in _JP_MOBILE.finditer(text):
        add("PHONE", *match.span())
    for match in _PHONE.finditer(text):
        value = match.group()
        # A bare run of digits is more likely an order or account number than a phone number.
        formatted = value.startswith("+") or bool(re.search(r"[ .()-]", value))
        if formatted and 8 <= sum(ch.isdigit() for ch in value) <= 15:
            add("PHONE", *match.span())
    return sorted(found, key=lambda r: r.start)


def redact(text: str) -> tuple[str, list[Redaction]]:
    """`text` with each PII span replaced by `[TYPE]`, and the spans (in the original text)."""
    spans = find_pii(text)
    pieces: list[str] = []
    cursor = 0
    for span in spans:
        pieces.append(text[cursor:span.start])
        pieces.append(f"[{span.type}]")
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces), spans
