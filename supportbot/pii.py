"""PII redaction: typed placeholders with spans, so text can go to the LLM, to logs and into transcripts safely.

Types: EMAIL, PHONE, CARD, IBAN, IP_ADDRESS, POSTAL_CODE and SECRET (API keys and tokens: this project's
`sb_`/`sbc_` keys and conversation tokens, OpenAI, Stripe, GitHub, Slack and AWS keys, JWTs, the token after
`Bearer`). Card numbers must pass the Luhn check and IBANs the ISO 13616 mod-97 check, so order numbers and
other long digit runs are not mistaken for them.
"""

from __future__ import annotations

import re
from collections.abc import Collection
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
# Numbers written in groups of two (much of Europe): "+34 612 48 93 07", "+33 6 12 34 56 78", and without the
# country code the French "06 12 34 56 78" and the Spanish "612 48 93 07" (a date or a time is never in pairs).
_INTL_PHONE = re.compile(r"(?<![A-Za-z0-9_#+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}(?![A-Za-z0-9_])(?![ .-]\d)")
_PAIRED_PHONE = re.compile(r"(?<![\d.,:/+-])(?:0\d(?:[ .]\d{2}){4}|[6-9]\d{2}(?: \d{2}){3})(?!\d|[ .,:/-]\d)")
# Japanese mobile numbers are often written without separators; their 070/080/090 prefix marks them.
_JP_MOBILE = re.compile(r"(?<![\d+])0[789]0\d{8}(?!\d)")
_IPV4 = re.compile(_START + r"(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)" + _END)
_JP_POSTAL = re.compile(r"〒\s?\d{3}-\d{4}")
_SECRETS = (
    re.compile(r"(?<![A-Za-z0-9_-])(?:sbc?_|sk-|[sr]k_(?:live|test)_|gh[pousr]_|github_pat_|xox[abprs]-)"
               r"[A-Za-z0-9_-]{8,}"),
    re.compile(_START + r"(?:AKIA|ASIA)[0-9A-Z]{16}" + _END),
    re.compile(_START + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
)
_BEARER = re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{16,})")  # a word after "bearer" is no token

SENSITIVE = frozenset({"CARD", "IBAN", "SECRET"})
"""What is never kept in clear anywhere, not even for the length of a conversation (the dialogue state)."""


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

    for match in _BEARER.finditer(text):
        add("SECRET", *match.span(1))
    for pattern in _SECRETS:
        for match in pattern.finditer(text):
            add("SECRET", *match.span())
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
    for match in (*_INTL_PHONE.finditer(text), *_PAIRED_PHONE.finditer(text), *_PHONE.finditer(text)):
        value = match.group()
        # A bare run of digits is more likely an order or account number than a phone number.
        formatted = value.startswith("+") or bool(re.search(r"[ .()-]", value))
        if formatted and 8 <= sum(ch.isdigit() for ch in value) <= 15:
            add("PHONE", *match.span())
    return sorted(found, key=lambda r: r.start)


def redact(text: str, types: Collection[str] | None = None) -> tuple[str, list[Redaction]]:
    """`text` with each PII span (of `types` only, when given) replaced by `[TYPE]`, and the spans replaced (in
    the original text)."""
    spans = [span for span in find_pii(text) if types is None or span.type in types]
    pieces: list[str] = []
    cursor = 0
    for span in spans:
        pieces.append(text[cursor:span.start])
        pieces.append(f"[{span.type}]")
        cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces), spans
