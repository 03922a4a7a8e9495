"""Word tokens: Japanese is segmented into dictionary forms; other scripts split as before."""

from __future__ import annotations

import threading

import numpy as np

from services.nlp.classifier import LinearModel, normalize
from services.nlp.tokens import words


def test_japanese_is_segmented_into_lemmas() -> None:
    assert words(normalize("荷物が届きません")) == ["荷物", "が", "届く", "ます", "ず"]
    assert words(normalize("パスワードを忘れました。")) == ["パスワード", "を", "忘れる", "ます", "た"]


def test_conjugated_forms_share_a_token() -> None:
    negative_forms = [words(normalize(text)) for text in ("まだ届かない", "まだ届きません", "まだ届いていない")]
    assert all("届く" in tokens for tokens in negative_forms)


def test_half_width_katakana_and_loanwords() -> None:
    assert words(normalize("ｷｬﾝｾﾙしたい")) == words(normalize("キャンセルしたい")) == ["キャンセル", "為る", "たい"]


def test_mixed_script_keeps_latin_words() -> None:
    assert words(normalize("iPhoneの注文をキャンセル")) == ["iphone", "の", "注文", "を", "キャンセル"]


def test_other_scripts_split_on_word_characters() -> None:
    assert words(normalize("Where is my order #A123? Où est ma commande")) == [
        "where", "is", "my", "order", "a123", "où", "est", "ma", "commande"]


def test_each_thread_segments_on_its_own_tagger() -> None:
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.extend(words("注文を取り消したい") for _ in range(200)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 800 and all(tokens == results[0] for tokens in results)


def test_the_classifier_has_japanese_words_as_features() -> None:
    texts = ["荷物が届きません", "まだ届かない", "返金してください", "お金を返してほしい"]
    model = LinearModel.fit(texts, np.array(["delivery_delay", "delivery_delay", "refund", "refund"]), None)
    assert {"届く", "返金", "届く ない"} <= set(model.words.vocabulary_)
