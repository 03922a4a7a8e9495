"""The nlp service's logic: one call runs every analyzer on a message. No FastAPI here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from services.nlp.classifier import IntentClassifier, load_or_train_default
from services.nlp.encoders import Encoder, frozen_encoders
from services.nlp.entities import extract_entities
from services.nlp.injection import InjectionDetector
from services.nlp.multilingual_encoder import ENCODER_NAME as MULTILINGUAL
from services.nlp.language import detect_language
from services.nlp.sentiment import SentimentAnalyzer
from supportbot.contracts.common import Intent
from supportbot.contracts.nlp import AnalyzeResponse, PiiSpan
from supportbot.pii import redact
from supportbot.settings import NlpSettings

log = logging.getLogger(__name__)


class ModelRegistry:
    """Serves a tenant's own intent model when `<models_dir>/tenants/<tenant>` holds one, else the default.

    `IntentClassifier.save` writes meta.json last, so a changed meta.json means a new model to load. One that
    fails to load (caught mid-write, or broken) is not tried again until one of its files changes; meanwhile
    the tenant keeps the model it had, or gets the default.
    """

    def __init__(self, default: IntentClassifier, models_dir: Path, encoders: Sequence[Encoder] = ()) -> None:
        self.default = default
        self.models_dir = models_dir
        self.encoders = list(encoders)
        # What `/v1/embed` serves (knowledge-base search): the first shared encoder, MiniLM where installed.
        self.embedding_encoder: Encoder | None = self.encoders[0] if self.encoders else None
        self._tenant_models: dict[str, tuple[int, IntentClassifier]] = {}  # by meta.json's mtime
        self._unloadable: dict[str, tuple[int, ...]] = {}  # the files' signature when loading failed

    def for_tenant(self, tenant_id: str | None) -> IntentClassifier:
        if not tenant_id:
            return self.default
        directory = self.models_dir / "tenants" / tenant_id
        try:
            saved = (directory / "meta.json").stat().st_mtime_ns
        except OSError:
            return self.default
        cached = self._tenant_models.get(tenant_id)
        if cached is not None and cached[0] == saved:
            return cached[1]
        fallback = cached[1] if cached else self.default
        signature = _signature(directory)
        if self._unloadable.get(tenant_id) == signature:
            return fallback
        try:
            model = IntentClassifier.load(directory, self.encoders)
        except Exception as exc:  # noqa: BLE001 - half-written or foreign files fail to unpickle in many ways
            log.warning("tenant intent model not loadable, serving the previous one until its files change: %s",
                        exc, extra={"supportbot.tenant": tenant_id})
            self._unloadable[tenant_id] = signature
            return fallback
        self._unloadable.pop(tenant_id, None)
        self._tenant_models[tenant_id] = (saved, model)
        return model


def _signature(directory: Path) -> tuple[int, ...]:
    """Modification times and sizes of a model directory's files (-1 for one that is missing)."""
    facts: list[int] = []
    for path in sorted(directory.rglob("*")):
        try:
            stat = path.stat()
        except OSError:
            facts += [-1, -1]
            continue
        facts += [stat.st_mtime_ns, stat.st_size]
    return tuple(facts)


class Analyzer:
    """Intent, out-of-scope, entities, sentiment and language for one message."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.sentiment = SentimentAnalyzer()
        multilingual = [encoder for encoder in registry.encoders if encoder.name == MULTILINGUAL]
        self.injection = InjectionDetector.shipped(multilingual[0] if multilingual else None)
        detect_language("warm up the language profiles once")

    @classmethod
    def from_settings(cls, settings: NlpSettings, progress: Callable[[str, float], None] | None = None) -> Analyzer:
        """What `supportbot prepare` made (`services.nlp.prepare`), loaded: nothing is exported or trained here
        (ModelNotPrepared when the default model is not there). `progress`: told each stage and the share done,
        in the shares of their time on two idle cores."""
        report = progress or (lambda _stage, _fraction: None)
        report("loading the sentence encoders", 0.0)
        # TF-IDF-only models work without an encoder; one that needs a missing one won't load.
        encoders = frozen_encoders(settings, build=False)
        report("loading the intent model", 0.35)
        default = (IntentClassifier.load(settings.model_dir, encoders) if settings.model_dir
                   else load_or_train_default(settings.prepared_models_dir, encoders=encoders, train=False))
        encoder = (default.meta.get("encoder") or {}).get("name", "none")
        log.info("intent model loaded", extra={"supportbot.model": default.name,
                                               "supportbot.intents": len(default.labels),
                                               "supportbot.encoder": encoder})
        _ = default.plan  # this CPU's encoder is timed (and the plan logged) now, not in the first request
        report("training the injection detector", 0.45)
        # Tenants' own models stay under the data directory, wherever the prepared ones are (images bake those).
        analyzer = cls(ModelRegistry(default, settings.data_dir / "models", encoders))
        report("loaded", 1.0)
        return analyzer

    def analyze(self, text: str, tenant_id: str | None = None) -> AnalyzeResponse:
        model = self.registry.for_tenant(tenant_id)
        # One embedding for both when the intent model uses the injection detector's encoder.
        encoder = self.injection.encoder
        embedding = encoder.encode_one(text) if encoder is not None and model.encoder is encoder else None
        prediction = model.predict(text, embedding=embedding)
        language = detect_language(text)
        redacted, spans = redact(text)
        return AnalyzeResponse(
            intent=Intent(name=prediction.intent, confidence=round(prediction.confidence, 4)),
            out_of_scope=prediction.out_of_scope,
            alternatives=[Intent(name=name, confidence=round(p, 4)) for name, p in prediction.alternatives],
            entities=extract_entities(text),
            sentiment=self.sentiment.analyze(text, language),
            language=language,
            pii=[PiiSpan(type=s.type, start=s.start, end=s.end) for s in spans],
            redacted_text=redacted,
            injection_score=self.injection.score(text, embedding),
            model=model.name,
        )
