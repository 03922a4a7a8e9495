"""Entity extraction with character spans: order and tracking numbers, e-mails, phones, money, dates.

E-mails and phones are the spans `supportbot.pii` finds, so extraction and redaction agree; digits that redaction
calls a card, IBAN, IP address or postal code are never tagged as anything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta

from supportbot.contracts.nlp import Entity
from supportbot.pii import Redaction, find_pii

# `\b` fails next to kana and kanji (they are word characters too), so boundaries are ASCII lookarounds.
_START = r"(?<![A-Za-z0-9_])"
_END = r"(?![A-Za-z0-9_])"

_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_JA_WEEKDAYS = "月火水木金土日"
_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
           "october", "november", "december"]
_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
                 "eight": 8, "nine": 9, "ten": 10}
_KANJI_DIGITS = "一二三四五六七八九十"
_KANJI_NUMBERS = {kanji: value for value, kanji in enumerate(_KANJI_DIGITS, start=1)}
_UNIT_DAYS = {"day": 1, "week": 7, "日": 1, "週間": 7}
_CURRENCY_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "￥": "JPY"}
_CURRENCY_WORDS = {"usd": "USD", "dollars": "USD", "dollar": "USD", "eur": "EUR", "euros": "EUR", "euro": "EUR",
                   "gbp": "GBP", "pounds": "GBP", "pound": "GBP", "jpy": "JPY", "yen": "JPY", "円": "JPY",
                   "chf": "CHF"}
_PII_ENTITY_TYPES = {"EMAIL": "email", "PHONE": "phone"}

_TRACKING = re.compile(
    _START + r"(?:1Z[0-9A-Z]{16}|[A-Z]{2}\d{9}[A-Z]{2})" + _END
    + "|" + _START + r"(?:(?i:tracking(?: number| no\.?)?)|追跡番号|伝票番号)[\s:：は]*"
    + r"(?P<value>\d{4}-\d{4}-\d{4}|\d{10,22})" + _END)
_ORDER = re.compile(
    _START + r"(?:ORD|ORDER|SO)[-#]?\d{4,12}" + _END
    + "|" + _START + r"#\d{4,12}" + _END
    + "|" + _START + r"(?:order(?: number| no\.?| id)?(?: is)?|注文(?:番号|ID|No\.?)|オーダー番号)[\s:：は、]*"
    + r"(?P<value>#?(?:[A-Z]{1,4}-?)?\d{5,12})" + _END,
    re.IGNORECASE)
# One thousands separator used throughout, then an optional decimal part with the other one: "1.234,56",
# "1,234.56", "1 234,56", "12,50". A suffix symbol must not be the prefix of the next amount ("5 $10").
_AMOUNT = (r"\d{1,3}(?P<sep>[,. \u00a0\u202f])\d{3}(?:(?P=sep)\d{3})*(?:(?!(?P=sep))[.,]\d{1,2})?"
           r"|\d+(?:[.,]\d{1,2})?")
_MONEY = re.compile(
    r"(?:(?P<prefix>[$€£¥￥]|(?<![A-Za-z])(?:usd|eur|gbp|jpy|chf))\s?|(?<![A-Za-z0-9_.,]))"
    rf"(?P<amount>{_AMOUNT})(?![.,]?\d)"
    r"(?:\s?(?P<suffix>[$€£¥￥円]|(?:usd|eur|gbp|jpy|chf|dollars?|euros?|pounds?|yen)(?![A-Za-z]))(?!\s?\d))?",
    re.IGNORECASE)
# Japanese amounts counted in 万 (ten thousand) and 千 (thousand): 5万円, 1万2000円, 1万2千円, 1.5万円, 3千円.
_JA_MONEY = re.compile(r"(?<![\d.,])(?:(?P<man>\d+(?:\.\d+)?)万(?:(?P<sen>\d)千|(?P<rest>\d{1,4}))?"
                       r"|(?P<sen_only>\d)千)円")
_WEEKDAY = "|".join(_WEEKDAYS)
_MONTH = "|".join(_MONTHS)
_EN_COUNT = "|".join([r"\d+", *_NUMBER_WORDS])
_JA_COUNT = rf"(?<![\d{_KANJI_DIGITS}])(?:\d+|[{_KANJI_DIGITS}])"
_DATE = re.compile(
    _START + r"(?:today|yesterday|tomorrow|the day before yesterday|the day after tomorrow"
    rf"|(?:next|last|this) (?:week|month|{_WEEKDAY})|(?:on )?(?:{_WEEKDAY})"
    rf"|(?:{_EN_COUNT}) (?:day|week)s? (?:ago|from now)|in (?:{_EN_COUNT}) (?:day|week)s?"
    rf"|\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}/\d{{1,2}}/\d{{2,4}}|(?:{_MONTH}) \d{{1,2}}(?:st|nd|rd|th)?"
    rf"|\d{{1,2}}(?:st|nd|rd|th)? (?:of )?(?:{_MONTH}))" + _END
    + rf"|一昨日|明後日|今日|昨日|明日|{_JA_COUNT}(?:日|週間)[前後]"
    rf"|[先今来]週の?[{_JA_WEEKDAYS}]曜日?|先週|来週|[{_JA_WEEKDAYS}]曜日?|\d{{1,2}}月\d{{1,2}}日",
    re.IGNORECASE)
_SIMPLE_DATES = {"today": 0, "yesterday": -1, "tomorrow": 1, "the day before yesterday": -2,
                 "the day after tomorrow": 2, "last week": -7, "next week": 7,
                 "今日": 0, "昨日": -1, "明日": 1, "一昨日": -2, "明後日": 2, "先週": -7, "来週": 7}


def _normalize_money(match: re.Match[str]) -> str | None:
    """Amount and ISO code, with two decimals where the text has a fraction ("12,5 €" is "12.50 EUR", "5.000 €"
    is "5000 EUR"); None without a currency."""
    marker = (match.group("prefix") or match.group("suffix") or "").lower()
    currency = _CURRENCY_SYMBOLS.get(marker) or _CURRENCY_WORDS.get(marker)
    if currency is None:
        return None
    amount = match.group("amount")
    fraction = re.search(r"[.,](\d{1,2})$", amount)
    whole = str(int(re.sub(r"\D", "", amount[:fraction.start()] if fraction else amount)))
    return f"{whole}.{fraction.group(1).ljust(2, '0')} {currency}" if fraction else f"{whole} {currency}"


def _count(word: str) -> int:
    return _NUMBER_WORDS.get(word) or _KANJI_NUMBERS.get(word) or int(word)


def _relative_days(phrase: str) -> int | None:
    """Signed day offset of "3 days ago", "in two weeks", "3日前", "2週間後" and the like."""
    if match := re.fullmatch(r"(\w+) (day|week)s? (ago|from now)", phrase):
        count, unit, direction = match.groups()
        sign = -1 if direction == "ago" else 1
    elif match := re.fullmatch(r"in (\w+) (day|week)s?", phrase):
        (count, unit), sign = match.groups(), 1
    elif match := re.fullmatch(r"(\w+?)(日|週間)([前後])", phrase):
        count, unit, direction = match.groups()
        sign = -1 if direction == "前" else 1
    else:
        return None
    return sign * _count(count) * _UNIT_DAYS[unit]


def _weekday(today: date, target: int, qualifier: str) -> date:
    """The `target` weekday: with "last" the latest before today, with "next" the first after, with "this" the
    coming one or today, bare the coming one or, when it is today's weekday, a week ago."""
    delta = (target - today.weekday()) % 7
    if qualifier == "last" or (not qualifier and delta == 0):
        delta = delta - 7 if delta > 0 else -7
    elif qualifier == "next":
        delta = delta or 7
    return today + timedelta(days=delta)


def _normalize_date(text: str, today: date) -> str | None:
    lowered = text.lower().removeprefix("on ")
    if lowered in _SIMPLE_DATES:
        return (today + timedelta(days=_SIMPLE_DATES[lowered])).isoformat()
    if (days := _relative_days(lowered)) is not None:
        return (today + timedelta(days=days)).isoformat()
    if match := re.fullmatch(r"([先今来])週の?(.)曜日?", lowered):  # a day of the previous, this or next ISO week
        monday = today - timedelta(days=today.weekday())
        weeks = "先今来".index(match.group(1)) - 1
        return (monday + timedelta(days=7 * weeks + _JA_WEEKDAYS.index(match.group(2)))).isoformat()
    if match := re.fullmatch(r"(.)曜日?", lowered):
        return _weekday(today, _JA_WEEKDAYS.index(match.group(1)), "").isoformat()
    words = lowered.split()
    if words[-1] in _WEEKDAYS:
        return _weekday(today, _WEEKDAYS.index(words[-1]), words[0] if len(words) > 1 else "").isoformat()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", lowered):
            return date.fromisoformat(lowered).isoformat()
        if match := re.fullmatch(r"(\d{1,2})月(\d{1,2})日", lowered):
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


def _pii_entities(text: str, spans: list[Redaction], pii_type: str) -> Iterator[Entity]:
    entity_type = _PII_ENTITY_TYPES[pii_type]
    for span in spans:
        if span.type == pii_type:
            value = text[span.start:span.end]
            normalized = value.lower() if entity_type == "email" else None
            yield Entity(type=entity_type, value=value, start=span.start, end=span.end, normalized=normalized)


def _matches(pattern: re.Pattern[str], text: str) -> Iterator[tuple[re.Match[str], str, int, int]]:
    """Each match with its value and span: the `value` group's where it matched (a label is not part of it)."""
    for match in pattern.finditer(text):
        group = "value" if "value" in pattern.groupindex and match.group("value") else 0
        yield match, match.group(group), *match.span(group)


def _tracking_numbers(text: str) -> Iterator[Entity]:
    for _, value, start, end in _matches(_TRACKING, text):
        yield Entity(type="tracking_number", value=value, start=start, end=end)


def _order_numbers(text: str) -> Iterator[Entity]:
    for _, value, start, end in _matches(_ORDER, text):
        normalized = re.sub(r"[^0-9A-Za-z]", "", value).upper()
        yield Entity(type="order_number", value=value, start=start, end=end, normalized=normalized)


def _money(text: str) -> Iterator[Entity]:
    for match, value, start, end in _matches(_MONEY, text):
        if normalized := _normalize_money(match):
            yield Entity(type="money", value=value, start=start, end=end, normalized=normalized)


def _japanese_money(text: str) -> Iterator[Entity]:
    for match in _JA_MONEY.finditer(text):
        man, sen, rest, sen_only = match.group("man", "sen", "rest", "sen_only")
        yen = (round(float(man) * 10_000) if man else 0) + int(sen or sen_only or 0) * 1_000 + int(rest or 0)
        yield Entity(type="money", value=match.group(), start=match.start(), end=match.end(),
                     normalized=f"{yen} JPY")


def _dates(text: str, today: date) -> Iterator[Entity]:
    for _, value, start, end in _matches(_DATE, text):
        yield Entity(type="date", value=value, start=start, end=end, normalized=_normalize_date(value, today))


def extract_entities(text: str, today: date | None = None) -> list[Entity]:
    """All entities in `text`, left to right; one overlapping an earlier type's entity is dropped."""
    today = today or date.today()
    pii = find_pii(text)
    taken = [(span.start, span.end) for span in pii if span.type not in _PII_ENTITY_TYPES]
    found: list[Entity] = []
    candidates = [
        *_pii_entities(text, pii, "EMAIL"),
        *_tracking_numbers(text),
        *_order_numbers(text),
        *_pii_entities(text, pii, "PHONE"),
        *_japanese_money(text),
        *_money(text),
        *_dates(text, today),
    ]
    for entity in candidates:
        if not any(start < entity.end and entity.start < end for start, end in taken):
            taken.append((entity.start, entity.end))
            found.append(entity)
    return sorted(found, key=lambda entity: entity.start)
