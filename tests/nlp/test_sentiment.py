"""Sentiment in the main European languages: lexicons with negation, failed expectations and boosters."""

from __future__ import annotations

import pytest

from services.nlp.sentiment import SentimentAnalyzer


@pytest.fixture(scope="module")
def analyzer() -> SentimentAnalyzer:
    return SentimentAnalyzer()


@pytest.mark.parametrize(("text", "language", "label"), [
    ("Das ist eine Frechheit, mein Paket ist immer noch nicht angekommen!", "de", "negative"),
    ("Vielen Dank, super schnell!", "de", "positive"),
    ("Wo ist meine Bestellung 48213?", "de", "neutral"),
    ("Das Produkt ist nicht gut", "de", "negative"),  # a positive word negated
    ("Ce n'est pas bon du tout", "fr", "negative"),
    ("Je n'ai toujours pas recu ma commande", "fr", "negative"),  # no accents, failed expectation
    ("Merci beaucoup, parfait", "fr", "positive"),
    ("No funciona y nadie contesta, estoy harto", "es", "negative"),
    ("¿Puedo cancelar mi pedido?", "es", "neutral"),
    ("Non è male", "it", "positive"),  # a negative word negated
    ("Het werkt niet en niemand reageert", "nl", "negative"),
    ("Muito obrigado, adorei!", "pt", "positive"),
])
def test_european_languages(analyzer: SentimentAnalyzer, text: str, language: str, label: str) -> None:
    assert analyzer.analyze(text, language).label == label


def test_boosters_and_exclamations_raise_frustration(analyzer: SentimentAnalyzer) -> None:
    plain = analyzer.analyze("Ich bin enttäuscht", "de").frustration
    boosted = analyzer.analyze("Ich bin sehr enttäuscht", "de").frustration
    shouted = analyzer.analyze("Ich bin sehr enttäuscht!!!", "de").frustration
    assert 0 < plain < boosted < shouted


def test_an_angry_german_customer_can_reach_the_handoff_threshold(analyzer: SentimentAnalyzer) -> None:
    # The dialogue service's default frustration threshold is 0.6.
    assert analyzer.analyze("Eine absolute Frechheit, schon wieder kaputt geliefert!!", "de").frustration >= 0.6
