"""nlp HTTP routes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from supportbot.contracts.nlp import AnalyzeRequest, AnalyzeResponse, PiiSpan, RedactRequest, RedactResponse
from supportbot.errors import ErrorResponse
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
