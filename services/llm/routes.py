"""llm HTTP routes: `/v1/generate` for internal callers, and the OpenAI-compatible API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from services.llm.admin import usage_report
from services.llm.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    Model,
    ModelList,
    SupportbotInfo,
    sse,
    usage_of,
)
from services.llm.providers.base import GenerationOptions, SamplingParams
from services.llm.service import Generator, LlmRequest, Outcome, StreamOutcome
from supportbot.contracts.admin import LlmErasure, UsageReport, UtcDateTime, as_utc
from supportbot.contracts.common import ConversationId, TenantId
from supportbot.contracts.llm import GenerateRequest, GenerateResponse, GenerateStreamEvent
from supportbot.errors import BadRequest, ErrorResponse

router = APIRouter(prefix="/v1", tags=["llm"], responses={422: {"model": ErrorResponse},
                                                          429: {"model": ErrorResponse}})
TENANT_HEADER = "X-Supportbot-Tenant"
_STARTED = int(time.time())


def _generator(request: Request) -> Generator:
    return request.app.state.generator  # type: ignore[no-any-return]


def _headers(outcome: Outcome | StreamOutcome) -> dict[str, str]:
    provider = outcome.response.provider if isinstance(outcome, Outcome) else outcome.provider
    reason = outcome.response.failover_reason if isinstance(outcome, Outcome) else outcome.failover_reason
    headers = {"X-Cache": outcome.cache_status, "X-Request-Id": outcome.request_id,
               "X-Supportbot-Provider": provider}
    if outcome.cache_key:
        headers["X-Cache-Key"] = outcome.cache_key
    if reason:
        headers["X-Supportbot-Failover-Reason"] = reason
    if outcome.budget_warning:
        headers["X-Budget-Warning"] = outcome.budget_warning
    return headers


@router.post("/generate", response_model=GenerateResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
async def generate(body: GenerateRequest, request: Request, response: Response) -> GenerateResponse | StreamingResponse:
    generator = _generator(request)
    job = LlmRequest.from_generate(body, default_max_tokens=generator.default_max_tokens)
    if body.stream and body.tools:
        raise BadRequest("tool calls are not streamed: send tools without stream", field="tools")
    if body.stream:
        started = await generator.stream(job)

        async def events() -> AsyncIterator[bytes]:
            async for piece in started.pieces:
                yield sse(GenerateStreamEvent(delta=piece).model_dump_json(exclude_none=True))
            yield sse(GenerateStreamEvent(response=started.response).model_dump_json(exclude_none=True))
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream", headers=_headers(started))
    outcome = await generator.generate(job, disconnected=request.is_disconnected)
    response.headers.update(_headers(outcome))
    return outcome.response


@router.get("/models", response_model=ModelList)
async def models(request: Request) -> ModelList:
    return ModelList(data=[Model(id=p.model, created=_STARTED, owned_by=p.name)
                           for p in _generator(request).providers])


@router.post("/chat/completions", response_model=ChatCompletion,
             responses={200: {"content": {"text/event-stream": {}}}, 404: {"model": ErrorResponse}})
async def chat_completions(body: ChatCompletionRequest, request: Request, response: Response,
                           tenant: Annotated[TenantId | None, Header(alias=TENANT_HEADER)] = None,
                           ) -> ChatCompletion | StreamingResponse:
    """OpenAI's chat completions. `model` may be any served model (GET /v1/models) or a provider name."""
    generator = _generator(request)
    tenant_id = tenant or body.user
    if tenant_id is None:
        raise BadRequest(f"name the tenant in the {TENANT_HEADER} header or the `user` field", field="user")
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    params = SamplingParams(
        temperature=body.temperature,
        max_tokens=body.max_completion_tokens or body.max_tokens or generator.default_max_tokens,
        options=GenerationOptions(top_p=body.top_p, stop=tuple(stop) if stop else None, seed=body.seed,
                                  presence_penalty=body.presence_penalty,
                                  frequency_penalty=body.frequency_penalty))
    job = LlmRequest(tenant_id=tenant_id, messages=[m.to_chat_message() for m in body.messages], params=params,
                     cache=body.cache, model=None if body.model in _ALIASES else body.model)
    if body.stream:
        started = await generator.stream(job)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_chunks(started, include_usage), media_type="text/event-stream",
                                 headers=_headers(started))
    outcome = await generator.generate(job, disconnected=request.is_disconnected)
    response.headers.update(_headers(outcome))
    answer = outcome.response
    return ChatCompletion(
        id=f"chatcmpl-{outcome.request_id}", model=answer.model,
        choices=[Choice(message=ChatCompletionMessage(content=answer.text), finish_reason=outcome.finish_reason)],
        usage=usage_of(answer.usage.prompt_tokens, answer.usage.completion_tokens),
        supportbot=SupportbotInfo(provider=answer.provider, cached=answer.cached,
                                  failover_reason=answer.failover_reason))


_ALIASES = {"supportbot", "default"}


async def _chunks(started: StreamOutcome, include_usage: bool) -> AsyncIterator[bytes]:
    created = int(time.time())

    def chunk(delta: ChoiceDelta, finish: str | None = None) -> bytes:
        return sse(ChatCompletionChunk(id=f"chatcmpl-{started.request_id}", created=created, model=started.model,
                                       choices=[ChunkChoice(delta=delta, finish_reason=finish)]))

    yield chunk(ChoiceDelta(role="assistant", content=""))
    async for piece in started.pieces:
        yield chunk(ChoiceDelta(content=piece))
    yield chunk(ChoiceDelta(), started.finish_reason)
    if include_usage and started.response is not None:
        usage = started.response.usage
        yield sse(ChatCompletionChunk(id=f"chatcmpl-{started.request_id}", created=created, model=started.model,
                                      choices=[], usage=usage_of(usage.prompt_tokens, usage.completion_tokens)))
    yield sse("[DONE]")


@router.get("/usage", response_model=UsageReport, tags=["admin"])
async def usage(request: Request, tenant_id: Annotated[TenantId, Query()],
                since: Annotated[UtcDateTime | None, Query(description="ISO date or datetime (UTC unless it says); "
                                                                     "default: the start of this month")] = None,
                ) -> UsageReport:
    """The tenant's usage per provider and model: requests, cached requests, tokens, cost."""
    await _generator(request).tenants.require(tenant_id)
    return await usage_report(request.app.state.sessions, tenant_id=tenant_id,
                              since=as_utc(since) if since else None)


@router.delete("/conversations/{conversation_id}", response_model=LlmErasure, tags=["admin"])
async def erase_conversation(request: Request, conversation_id: ConversationId,
                             tenant_id: Annotated[TenantId, Query()]) -> LlmErasure:
    """Delete the cached replies that answered the conversation and clear its id from its usage rows."""
    generator = _generator(request)
    await generator.tenants.require(tenant_id)
    return await generator.erasure.erase(tenant_id=tenant_id, conversation_id=conversation_id,
                                         cache=generator.cache, recorder=request.app.state.recorder,
                                         sessions=request.app.state.sessions)
