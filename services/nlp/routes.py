"""nlp HTTP routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from services.nlp.analyzer import Analyzer
from supportbot.contracts.nlp import (
    AnalyzeRequest,
    AnalyzeResponse,
    EmbedRequest,
    EmbedResponse,
    PiiSpan,
    RedactRequest,
    RedactResponse,
)
from supportbot.errors import ErrorResponse, ServiceUnavailable
from supportbot.pii import redact

router = APIRouter(prefix="/v1", tags=["nlp"], responses={422: {"model": ErrorResponse}})


async def ready_analyzer(request: Request) -> Analyzer:
    """The loaded analyzer; 503 while the models are still being prepared or loaded (or failed to be)."""
    analyzer: Analyzer | None = getattr(request.app.state, "analyzer", None)
    if analyzer is None:
        raise ServiceUnavailable(request.app.state.preparation.unavailable_reason())
    return analyzer


ReadyAnalyzer = Annotated[Analyzer, Depends(ready_analyzer)]


@router.post("/analyze", response_model=AnalyzeResponse, responses={503: {"model": ErrorResponse}})
async def analyze(body: AnalyzeRequest, analyzer: ReadyAnalyzer) -> AnalyzeResponse:
    # The model is CPU-bound: keep it off the event loop so probes stay responsive.
    return await run_in_threadpool(analyzer.analyze, body.text, body.tenant_id)


@router.post("/redact", response_model=RedactResponse)
async def redact_text(body: RedactRequest) -> RedactResponse:
    text, spans = redact(body.text)
    return RedactResponse(text=text, redactions=[PiiSpan(type=s.type, start=s.start, end=s.end) for s in spans])


@router.post("/embed", response_model=EmbedResponse, responses={503: {"model": ErrorResponse}})
async def embed(body: EmbedRequest, analyzer: ReadyAnalyzer) -> EmbedResponse:
    """Sentence embeddings (L2-normalised), e.g. for semantic knowledge-base retrieval."""
    encoder = analyzer.registry.embedding_encoder
    if encoder is None:
        raise ServiceUnavailable("the sentence encoder is not available on this nlp service")
    texts = [text[:4000] for text in body.texts]
    vectors = await run_in_threadpool(encoder.encode, texts)
    return EmbedResponse(model=encoder.name, dimension=int(vectors.shape[1]),
                         vectors=[[round(float(x), 5) for x in row] for row in vectors])
