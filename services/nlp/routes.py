"""nlp HTTP routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

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


@router.post("/analyze", response_model=AnalyzeResponse)
async def analyze(body: AnalyzeRequest, request: Request) -> AnalyzeResponse:
    # The model is CPU-bound: keep it off the event loop so probes stay responsive.
    return await run_in_threadpool(request.app.state.analyzer.analyze, body.text, body.tenant_id)


@router.post("/redact", response_model=RedactResponse)
async def redact_text(body: RedactRequest) -> RedactResponse:
    text, spans = redact(body.text)
    return RedactResponse(text=text, redactions=[PiiSpan(type=s.type, start=s.start, end=s.end) for s in spans])


@router.post("/embed", response_model=EmbedResponse, responses={503: {"model": ErrorResponse}})
async def embed(body: EmbedRequest, request: Request) -> EmbedResponse:
    """Sentence embeddings (L2-normalised), e.g. for semantic knowledge-base retrieval."""
    encoder = request.app.state.analyzer.registry.embedding_encoder
    if encoder is None:
        raise ServiceUnavailable("the sentence encoder is not available on this nlp service")
    texts = [text[:4000] for text in body.texts]
    vectors = await run_in_threadpool(encoder.encode, texts)
    return EmbedResponse(model=encoder.name, dimension=int(vectors.shape[1]),
                         vectors=[[round(float(x), 5) for x in row] for row in vectors])
