"""Language identification on the short messages chat is made of."""

from __future__ import annotations

import pytest

from services.nlp.language import LANGUAGES, detect_language


@pytest.mark.parametrize(("text", "language"), [
    ("hola", "es"),
    ("Danke!", "de"),
    ("bedankt", "nl"),
    ("kiitos", "fi"),
    ("colis perdu", "fr"),
    ("rimborso?", "it"),
    ("Chcę anulować zamówienie", "pl"),
    ("Jag vill avbryta min beställning", "sv"),
    ("Quero cancelar o meu pedido", "pt"),
    ("Привет, где мой заказ?", "ru"),
    ("I paid 49.99 USD last Friday", "en"),
])
def test_short_messages_in_european_languages(text: str, language: str) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize("text", ["hi", "ok", "thanks", "help", "order status", "refund"])
def test_evidence_free_messages_go_to_the_default_language(text: str) -> None:
    assert detect_language(text) == "en"


def test_the_default_is_the_deployment_s() -> None:
    assert detect_language("12345 !!!", default="ja") == "ja"
    assert detect_language("Merci beaucoup pour votre aide", default="de") == "fr"


@pytest.mark.parametrize(("text", "language"), [
    ("返金希望", "ja"),  # kanji-only Japanese shorthand
    ("注文番号", "ja"),
    ("我的订单在哪里", "zh"),
    ("請問我的訂單在哪裡", "zh"),
    ("주문 취소하고 싶어요", "ko"),
])
def test_cjk_scripts(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_answers_come_from_the_supported_set() -> None:
    for text in ("Salut", "Hej hej", "Dobrý den, kde je moje objednávka?", "Merhaba siparişim nerede"):
        assert detect_language(text) in LANGUAGES
