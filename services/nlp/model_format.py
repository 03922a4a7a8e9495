"""What a saved intent model's format is, and where the default model lives.

Apart from `services.nlp.classifier` so that it imports neither numpy nor scikit-learn: `supportbot prepare`
tells whether it has anything to do in a fraction of a second (`services.nlp.prepare.missing`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from supportbot.resources import DEFAULT_INTENTS_CSV

FORMAT = 2  # of model.joblib; directories of other formats must be retrained
# What the features are made of, in the default model's cache key: a change retrains the cached default model.
# 2: Japanese words segmented by MeCab (`services.nlp.tokens`). 3: the encoder chosen among the frozen ones.
# 4: a words-only fast path (`services.nlp.fast_path`).
FEATURES = 4


def default_model_dir(cache_dir: Path, encoder_names: Sequence[str], data: Path = DEFAULT_INTENTS_CSV) -> Path:
    """Where the default model trained on `data` with these frozen encoders lives: named by a hash of the data
    and the model kind, so a change of either trains a new one beside it."""
    kind = f"format{FORMAT}:features{FEATURES}:{'+'.join(encoder_names) or 'tfidf'}".encode()
    return cache_dir / f"default-{hashlib.sha256(data.read_bytes() + kind).hexdigest()[:16]}"


def is_model_dir(directory: Path) -> bool:
    """Whether `directory` holds a saved model's two files (written into a staging directory renamed in, the
    default model's are complete when they are there)."""
    return (directory / "meta.json").is_file() and (directory / "model.joblib").is_file()
