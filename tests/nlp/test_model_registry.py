"""Which intent model a tenant is served, as its model directory is written, broken and fixed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.nlp.analyzer import ModelRegistry
from services.nlp.classifier import IntentClassifier

TEXTS = [f"beam me up {i}" for i in range(6)] + [f"warp speed now {i}" for i in range(6)]
LABELS = ["teleport"] * 6 + ["warp"] * 6


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every directory `IntentClassifier.load` is asked to read."""
    seen: list[Path] = []
    real = IntentClassifier.load.__func__  # type: ignore[attr-defined]

    def counting(cls: type[IntentClassifier], directory: Path, *args: object, **kwargs: object) -> IntentClassifier:
        seen.append(directory)
        return real(cls, directory, *args, **kwargs)

    monkeypatch.setattr(IntentClassifier, "load", classmethod(counting))
    return seen


def _touch_later(path: Path) -> None:
    """Move the mtime on by a second, as a later write would (file systems with coarse clocks)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_a_broken_tenant_model_is_tried_once_until_its_files_change(tmp_path: Path, loads: list[Path]) -> None:
    default = IntentClassifier.train(TEXTS, LABELS, name="default")
    registry = ModelRegistry(default, tmp_path)
    directory = tmp_path / "tenants" / "globex"
    IntentClassifier.train(TEXTS, LABELS, name="first").save(directory)
    assert registry.for_tenant("globex").name == "first"
    assert registry.for_tenant("globex").name == "first" and len(loads) == 1  # cached

    (directory / "model.joblib").write_bytes(b"half a file")
    _touch_later(directory / "meta.json")
    served = [registry.for_tenant("globex").name for _ in range(5)]
    assert served == ["first"] * 5  # the model it had
    assert len(loads) == 2  # one failed attempt, not one per request

    IntentClassifier.train(TEXTS, LABELS, name="second").save(directory)
    _touch_later(directory / "meta.json")
    assert registry.for_tenant("globex").name == "second"
    assert len(loads) == 3


def test_a_tenant_whose_only_model_is_broken_gets_the_default(tmp_path: Path, loads: list[Path]) -> None:
    default = IntentClassifier.train(TEXTS, LABELS, name="default")
    registry = ModelRegistry(default, tmp_path)
    directory = tmp_path / "tenants" / "initech"
    IntentClassifier.train(TEXTS, LABELS, name="theirs").save(directory)
    (directory / "model.joblib").write_bytes(b"not a model")
    assert [registry.for_tenant("initech").name for _ in range(3)] == ["default"] * 3
    assert len(loads) == 1

    IntentClassifier.train(TEXTS, LABELS, name="theirs").save(directory)  # fixed by hand: meta.json rewritten too
    _touch_later(directory / "model.joblib")
    assert registry.for_tenant("initech").name == "theirs"
    assert registry.for_tenant(None).name == "default" and registry.for_tenant("nobody").name == "default"
