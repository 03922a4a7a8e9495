from __future__ import annotations

import pytest

from supportbot.pii import SENSITIVE, iban_valid, luhn_valid, redact


def test_luhn_and_iban_checks() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE89 3704 0044 0532 0130 01")


@pytest.mark.parametrize(("text", "expected"), [
    ("pay with 4111 1111 1111 1111 please", "pay with [CARD] please"),
    ("card 5500-0000-0000-0004 exp 12/27", "card [CARD] exp 12/27"),
    ("not a card 4111 1111 1111 1112", "not a card 4111 1111 1111 1112"),
    ("IBAN DE89 3704 0044 0532 0130 00 ok", "IBAN [IBAN] ok"),
    ("IBAN GB82WEST12345698765432", "IBAN [IBAN]"),
    ("mail Jane.Doe+x@example.co.uk now", "mail [EMAIL] now"),
    ("call +49 30 1234567 or (555) 123-4567", "call [PHONE] or [PHONE]"),
    ("order 123456789012 is late", "order 123456789012 is late"),
    ("my ip is 192.168.1.10", "my ip is [IP_ADDRESS]"),
    ("電話は03-1234-5678、〒100-0001です", "電話は[PHONE]、[POSTAL_CODE]です"),
    ("電話番号は090-1234-5678です", "電話番号は[PHONE]です"),
    ("連絡先：+81-3-1234-5678まで", "連絡先：[PHONE]まで"),
    ("メールはtaro@example.jpまで", "メールは[EMAIL]まで"),
    ("mail jürgen.müller@example.de now", "mail [EMAIL] now"),
    ("口座はDE89370400440532013000です", "口座は[IBAN]です"),
    ("IPは192.168.1.10です", "IPは[IP_ADDRESS]です"),
    ("携帯は09012345678です", "携帯は[PHONE]です"),
    ("order 12345678901 is late", "order 12345678901 is late"),
    ("llámame al +34 612 48 93 07 por la tarde", "llámame al [PHONE] por la tarde"),
    ("mi móvil es 612 48 93 07.", "mi móvil es [PHONE]."),
    ("appelez le 06 12 34 56 78 svp", "appelez le [PHONE] svp"),
    ("+33 6 12 34 56 78", "[PHONE]"),
    ("delivered on 2024-12-01 at 12:30, 2 x 24.99", "delivered on 2024-12-01 at 12:30, 2 x 24.99"),
])
def test_redaction(text: str, expected: str) -> None:
    redacted, spans = redact(text)
    assert redacted == expected
    for span in spans:
        assert text[span.start:span.end].strip()


@pytest.mark.parametrize(("text", "expected"), [
    ("here is my key sb_Zx81kQ0pLm3nVb7c", "here is my key [SECRET]"),
    ("Authorization: Bearer eyJ0eXAiOiJKV1QiLCJh.eyJzdWIiOiIxMjM0NTY3.abc", "Authorization: Bearer [SECRET]"),
    ("the bearer of this card is me", "the bearer of this card is me"),
    ("our stripe key sk_live_51Habcdefghij leaked", "our stripe key [SECRET] leaked"),
    ("token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ012345", "token [SECRET]"),
    ("AWS AKIAIOSFODNN7EXAMPLE in the config", "AWS [SECRET] in the config"),
    ("key id key_0123456789abcdef is fine", "key id key_0123456789abcdef is fine"),
])
def test_secrets_are_redacted(text: str, expected: str) -> None:
    assert redact(text)[0] == expected


def test_redacting_only_some_types() -> None:
    text = "card 4111 1111 1111 1111, mail ana@example.com, key sk-abcdefgh12345678"
    assert redact(text, SENSITIVE)[0] == "card [CARD], mail ana@example.com, key [SECRET]"
