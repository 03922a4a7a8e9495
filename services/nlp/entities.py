"""Entity extraction with character spans: order and tracking numbers, e-mails, phones, money, dates."""

from __future__ import annotations

import re
from datetime import date, timedelta

from supportbot.contracts.nlp import Entity

_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
           "october", "november", "december"]
_CURRENCY_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "￥": "JPY"}
_CURRENCY_WORDS = {"usd": "USD", "dollars": "USD", "dollar": "USD", "eur": "EUR", "euros": "EUR", "euro": "EUR",
                   "gbp": "GBP", "pounds": "GBP", "jpy": "JPY", "yen": "JPY", "円": "JPY", "chf": "CHF"}

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    ("tracking_number", re.compile(r"\b(?:1Z[0-9A-Z]{16}|[A-Z]{2}\d{9}[A-Z]{2})\b")),
    ("order_number", re.compile(
        r"(?:\b(?:ORD|ORDER|SO)[-#]?\d{4,12}\b|#\d{4,12}\b|(?<=order )\d{5,12}\b|(?<=order number )\d{5,12}\b"
        r"|(?<=order no\. )\d{5,12}\b|(?<=注文番号)\s?\d{5,12}|(?<=注文番号は)\s?\d{5,12})", re.IGNORECASE)),
    ("phone", re.compile(r"(?<![\w#])\+?\d{1,3}?[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}(?!\w)")),
    ("money", re.compile(
        r"(?P<sym>[$€£¥￥])\s?(?P<amt1>\d{1,3}(?:[,.\s]\d{3})*(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)"
        r"|(?P<amt2>\d+(?:[.,]\d{1,2})?)\s?(?P<word>usd|eur|gbp|jpy|chf|dollars?|euros?|pounds|yen|円)(?![a-z])",
        re.IGNORECASE)),
    ("date", re.compile(
        r"\b(?:today|yesterday|tomorrow|the day before yesterday|(?:next|last|this) (?:week|month|"
        + "|".join(_WEEKDAYS) + r")|(?:on )?(?:" + "|".join(_WEEKDAYS) + r")"
        + r"|\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}|(?:" + "|".join(_MONTHS) + r") \d{1,2}(?:st|nd|rd|th)?"
        + r"|\d{1,2}(?:st|nd|rd|th)? (?:of )?(?:" + "|".join(_MONTHS) + r")|\d+ days? ago)\b"
        + r"|今日|昨日|明日|一昨日|先週|来週|\d{1,2}月\d{1,2}日", re.IGNORECASE)),
]


def _normalize_money(match: re.Match[str]) -> str:
    symbol, word = match.group("sym"), match.group("word")
    amount = (match.group("amt1") or match.group("amt2") or "").replace(" ", "")
    if "," in amount and "." not in amount and len(amount.rsplit(",", 1)[1]) == 2:
        amount = amount.replace(",", ".")  # European decimal comma: 12,50 €
    amount = amount.replace(",", "")
    currency = _CURRENCY_SYMBOLS.get(symbol or "", "") or _CURRENCY_WORDS.get((word or "").lower(), "")
    return f"{amount} {currency}".strip()


def _normalize_date(text: str, today: date) -> str | None:
    lowered = text.lower().removeprefix("on ").strip()
    simple = {"today": 0, "yesterday": -1, "tomorrow": 1, "the day before yesterday": -2,
              "今日": 0, "昨日": -1, "明日": 1, "一昨日": -2}
    if lowered in simple:
        return (today + timedelta(days=simple[lowered])).isoformat()
    if lowered in ("last week", "先週"):
        return (today - timedelta(days=7)).isoformat()
    if lowered in ("next week", "来週"):
        return (today + timedelta(days=7)).isoformat()
    if match := re.fullmatch(r"(\d+) days? ago", lowered):
        return (today - timedelta(days=int(match.group(1)))).isoformat()
    words = lowered.split()
    if words and words[-1] in _WEEKDAYS:
        target = _WEEKDAYS.index(words[-1])
        delta = (target - today.weekday()) % 7
        if words[0] == "last" or (len(words) == 1 and delta == 0):
            delta = delta - 7 if delta > 0 else -7
        elif words[0] == "next":
            delta = delta or 7
        return (today + timedelta(days=delta)).isoformat()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", lowered):
        return lowered
    if match := re.fullmatch(r"(\d{1,2})月(\d{1,2})日", lowered):
        try:
            return date(today.year, int(match.group(1)), int(match.group(2))).isoformat()
        except ValueError:
            return None
    for month_index, month in enumerate(_MONTHS, start=1):
        if month in lowered:
            day_match = re.search(r"\d{1,2}", lowered)
            if day_match:
                try:
                    return date(today.year, month_index, int(day_match.group())).isoformat()
                except ValueError:
                    return None
    return None


def extract_entities(text: str, today: date | None = None) -> list[Entity]:
    """All entities in `text`, left to right; an overlapping later match is dropped."""
    today = today or date.today()
    found: list[Entity] = []
    taken: list[tuple[int, int]] = []
    for entity_type, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            start, end = match.span()
            value = match.group().strip()
            start += len(match.group()) - len(match.group().lstrip())
            if not value or any(s < end and start < e for s, e in taken):
                continue
            if entity_type == "phone" and sum(c.isdigit() for c in value) < 7:
                continue
            normalized: str | None = None
            if entity_type == "money":
                normalized = _normalize_money(match)
            elif entity_type == "date":
                normalized = _normalize_date(value, today)
            elif entity_type == "order_number":
                normalized = re.sub(r"[^0-9A-Za-z]", "", value).upper()
            elif entity_type == "email":
                normalized = value.lower()
            taken.append((start, start + len(value)))
            found.append(Entity(type=entity_type, value=value, start=start, end=start + len(value),
                                normalized=normalized))
    return sorted(found, key=lambda entity: entity.start)
