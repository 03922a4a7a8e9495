"""Entity extraction: exact spans and normalized values, agreement with PII redaction, and what is no entity."""

from __future__ import annotations

from datetime import date

import pytest

from services.nlp.entities import extract_entities
from supportbot.pii import find_pii

TODAY = date(2026, 11, 29)  # a Sunday
WEDNESDAY = date(2026, 11, 25)

Found = tuple[str, str, int, str | None]  # type, value, start, normalized


def found(text: str, today: date = TODAY) -> list[Found]:
    entities = extract_entities(text, today)
    for entity in entities:
        assert text[entity.start:entity.end] == entity.value
        assert entity.end == entity.start + len(entity.value)
    return [(e.type, e.value, e.start, e.normalized) for e in entities]


@pytest.mark.parametrize(("text", "expected"), [
    ("3日前に5,000円を支払いました", [("date", "3日前", 0, "2026-11-26"), ("money", "5,000円", 4, "5000 JPY")]),
    ("合計12,800円でした", [("money", "12,800円", 2, "12800 JPY")]),
    ("it was 3,980 yen", [("money", "3,980 yen", 7, "3980 JPY")]),
    ("refund 1,234.56 USD please", [("money", "1,234.56 USD", 7, "1234.56 USD")]),
    ("charged 49.99 USD", [("money", "49.99 USD", 8, "49.99 USD")]),
    ("paid $1,234.56", [("money", "$1,234.56", 5, "1234.56 USD")]),
    ("¥3,980でした", [("money", "¥3,980", 0, "3980 JPY")]),
    ("USD 49.99 twice", [("money", "USD 49.99", 0, "49.99 USD")]),
])
def test_money_with_thousands_separators(text: str, expected: list[Found]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Rechnung über 1.234,56 € offen", [("money", "1.234,56 €", 14, "1234.56 EUR")]),
    ("nur 12,50 €", [("money", "12,50 €", 4, "12.50 EUR")]),
    ("total € 1.234,56", [("money", "€ 1.234,56", 6, "1234.56 EUR")]),
    ("19,99 EUR", [("money", "19,99 EUR", 0, "19.99 EUR")]),
    ("il coûte 39,90 € TTC", [("money", "39,90 €", 9, "39.90 EUR")]),
    ("montant 1 234,56 €", [("money", "1 234,56 €", 8, "1234.56 EUR")]),
    ("Kosten 5.000 €", [("money", "5.000 €", 7, "5000 EUR")]),
    # A fraction always renders with two decimals, a whole amount with none.
    ("nur 12,5 €", [("money", "12,5 €", 4, "12.50 EUR")]),
])
def test_european_money(text: str, expected: list[Found]) -> None:
    assert found(text) == expected


def test_a_suffix_symbol_is_not_taken_from_the_next_amount() -> None:
    assert found("5 $10") == [("money", "$10", 2, "10 USD")]


@pytest.mark.parametrize(("text", "value", "start", "normalized"), [
    ("3日前に届きました", "3日前", 0, "2026-11-26"),
    ("三日前に届きました", "三日前", 0, "2026-11-26"),
    ("3日後に届きます", "3日後", 0, "2026-12-02"),
    ("2週間前に注文", "2週間前", 0, "2026-11-15"),
    ("明後日届きますか", "明後日", 0, "2026-12-01"),
    ("一昨日注文しました", "一昨日", 0, "2026-11-27"),
    ("先週注文しました", "先週", 0, "2026-11-22"),
    ("来週届きますか", "来週", 0, "2026-12-06"),
    ("来週の月曜日に届きますか", "来週の月曜日", 0, "2026-11-30"),
    ("来週月曜に届きますか", "来週月曜", 0, "2026-11-30"),
    ("今週の金曜日に注文しました", "今週の金曜日", 0, "2026-11-27"),
    ("先週の金曜日に注文しました", "先週の金曜日", 0, "2026-11-20"),
    ("月曜日に届きますか", "月曜日", 0, "2026-11-30"),
])
def test_japanese_relative_dates(text: str, value: str, start: int, normalized: str) -> None:
    assert found(text) == [("date", value, start, normalized)]


@pytest.mark.parametrize(("text", "normalized"), [
    ("来週の月曜日", "2026-11-30"), ("今週の金曜日", "2026-11-27"), ("先週の金曜日", "2026-11-20"),
])
def test_japanese_week_days_are_days_of_iso_weeks(text: str, normalized: str) -> None:
    assert found(text, WEDNESDAY) == [("date", text, 0, normalized)]


@pytest.mark.parametrize(("text", "value", "start", "normalized"), [
    ("it comes the day after tomorrow", "the day after tomorrow", 9, "2026-12-01"),
    ("I paid the day before yesterday", "the day before yesterday", 7, "2026-11-27"),
    ("ordered two weeks ago", "two weeks ago", 8, "2026-11-15"),
    ("ordered 2 weeks ago", "2 weeks ago", 8, "2026-11-15"),
    ("ordered a week ago", "a week ago", 8, "2026-11-22"),
    ("ordered ten days ago", "ten days ago", 8, "2026-11-19"),
    ("it should arrive in 3 days", "in 3 days", 17, "2026-12-02"),
    ("it should arrive in two weeks", "in two weeks", 17, "2026-12-13"),
    ("due 3 days from now", "3 days from now", 4, "2026-12-02"),
    ("it should come next Monday", "next Monday", 15, "2026-11-30"),
    ("I ordered last Friday", "last Friday", 10, "2026-11-27"),
])
def test_english_relative_dates(text: str, value: str, start: int, normalized: str) -> None:
    assert found(text) == [("date", value, start, normalized)]


@pytest.mark.parametrize(("text", "value", "start"), [
    ("電話番号は090-1234-5678です", "090-1234-5678", 5),
    ("連絡先：+81-3-1234-5678まで", "+81-3-1234-5678", 4),
    ("0120-123-456にお電話ください", "0120-123-456", 0),
    ("call (555) 123-4567 today", "(555) 123-4567", 5),
])
def test_phones(text: str, value: str, start: int) -> None:
    assert [e for e in found(text) if e[0] == "phone"] == [("phone", value, start, None)]


@pytest.mark.parametrize("text", [
    "電話番号は090-1234-5678です",
    "call +49 30 1234567 or (555) 123-4567",
    "お問い合わせ番号 123456789012",
    "電話は03-1234-5678、〒100-0001です",
    "メールはtaro@example.jpまで",
])
def test_phones_and_emails_are_what_redaction_finds(text: str) -> None:
    entities = {(e.type, e.start, e.end) for e in extract_entities(text, TODAY) if e.type in ("phone", "email")}
    redacted = {(r.type.lower(), r.start, r.end) for r in find_pii(text) if r.type in ("PHONE", "EMAIL")}
    assert entities == redacted


@pytest.mark.parametrize(("text", "value", "start"), [
    ("メールはtaro@example.jpまで", "taro@example.jp", 4),
    ("メールはhanako.yamada+shop@mail.example.co.jpです", "hanako.yamada+shop@mail.example.co.jp", 4),
    ("연락처 taro@example.com으로", "taro@example.com", 4),
])
def test_emails_stop_at_other_scripts(text: str, value: str, start: int) -> None:
    assert found(text) == [("email", value, start, value)]


@pytest.mark.parametrize("text", [
    "IBAN DE89 3704 0044 0532 0130 00",
    "口座はDE89370400440532013000です",
    "card 4111 1111 1111 1111",
    "カード4111-1111-1111-1111で",
])
def test_card_and_iban_digits_are_no_entities(text: str) -> None:
    assert found(text) == []


@pytest.mark.parametrize(("text", "value", "start", "normalized"), [
    ("ご注文番号：55201", "55201", 6, "55201"),
    ("注文番号 #48213", "#48213", 5, "48213"),
    ("注文番号は A-99321", "A-99321", 6, "A99321"),
    ("注文番号は55201です", "55201", 5, "55201"),
    ("注文番号 123456 は昨日届くはずでした", "123456", 5, "123456"),
    ("my order number is 12345678", "12345678", 19, "12345678"),
    ("Order ORD-48213 is late", "ORD-48213", 6, "ORD48213"),
])
def test_order_numbers(text: str, value: str, start: int, normalized: str) -> None:
    assert [e for e in found(text) if e[0] == "order_number"] == [("order_number", value, start, normalized)]


@pytest.mark.parametrize(("text", "value", "start"), [
    ("追跡番号1Z999AA10123456784です", "1Z999AA10123456784", 4),
    ("追跡番号は1234-5678-9012です", "1234-5678-9012", 5),
    ("tracking RR123456789DE", "RR123456789DE", 9),
    ("tracking number 123456789012 ok", "123456789012", 16),
])
def test_tracking_numbers(text: str, value: str, start: int) -> None:
    assert found(text) == [("tracking_number", value, start, None)]


@pytest.mark.parametrize("text", [
    "I have 2 kids",
    "size 42",
    "2024",
    "in 2024",
    "about 1,000 people came",
    "注文は2点です",
    "お問い合わせ番号 123456789012",
    "order 2 items",
    "reorder 12345",
    "please call me 5 times",
    "not a card 4111 1111 1111 1112",
])
def test_plain_numbers_are_no_entities(text: str) -> None:
    assert found(text) == []


@pytest.mark.parametrize(("text", "expected"), [
    ("5万円の返金", [("money", "5万円", 0, "50000 JPY")]),
    ("1万2000円を払った", [("money", "1万2000円", 0, "12000 JPY")]),
    ("１万２千円", [("money", "１万２千円", 0, "12000 JPY")]),
    ("1.5万円です", [("money", "1.5万円", 0, "15000 JPY")]),
    ("3千円のクーポン", [("money", "3千円", 0, "3000 JPY")]),
])
def test_japanese_amounts_in_man_and_sen(text: str, expected: list[Found]) -> None:
    assert found(text) == expected


def test_japanese_mobile_without_separators() -> None:
    assert found("携帯は09012345678です") == [("phone", "09012345678", 3, None)]
