"""llm HTTP routes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from supportbot.contracts.llm import GenerateRequest, GenerateResponse
from supportbot.errors import ErrorResponse

router = APIRouter(prefix="/v1", tags=["llm"], responses={422: {"model": ErrorResponse}})


@router.post("/generate", response_model=GenerateResponse)
async def generate(body: GenerateRequest, request: Request, response: Response) -> GenerateResponse:
    outcome = await request.app.state.generator.generate(body)
    response.headers["X-Cache"] = outcome.cache_status
    if outcome.cache_key:
        response.headers["X-Cache-Key"] = outcome.cache_key
    return outcome.response
