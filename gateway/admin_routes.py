"""Admin /v1 routes: list the tenant's conversations, read its LLM usage, erase a conversation.

Erasing touches two services: dialogue (messages, the conversation row, its state in Redis) and llm (the cached
replies that answered it, and the conversation id on its usage rows, whose counts stay). Dialogue goes first,
under the conversation's lock, so no turn runs during the erase and none can start after it (the row is gone).
If llm then fails, the answer is 503 saying that the erase is half done, and a retried DELETE finishes it: the
retry finds no conversation in dialogue but still asks llm, and when llm had something left to erase the
retry answers 204. Only when neither service knows the conversation (never existed, another tenant's, or
already erased whole) is the answer 404. While llm is down a DELETE of an id dialogue does not know is 503 too:
whether llm holds anything of it cannot be known until llm answers.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from gateway.access import Permission, Principal
from gateway.deps import require
from supportbot.contracts.admin import (
    ConversationErased,
    ConversationPage,
    LlmErasure,
    PageCursor,
    UsageReport,
    UtcDateTime,
    as_utc,
)
from supportbot.contracts.common import ConversationId
from supportbot.contracts.dialogue import Channel
from supportbot.errors import DownstreamError, ErrorResponse, NotFound
from supportbot.http import DownstreamRejected, ServiceClient

log = logging.getLogger(__name__)


def dialogue_client(request: Request) -> ServiceClient:
    return request.app.state.dialogue  # type: ignore[no-any-return]


def llm_client(request: Request) -> ServiceClient:
    return request.app.state.llm  # type: ignore[no-any-return]


DialogueDep = Annotated[ServiceClient, Depends(dialogue_client)]
LlmDep = Annotated[ServiceClient, Depends(llm_client)]

_errors = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 422, 429, 503, 504)}
router = APIRouter(prefix="/v1", tags=["admin"], responses=_errors)


@router.get("/conversations", response_model=ConversationPage)
async def list_conversations(
    principal: Annotated[Principal, Depends(require(Permission.LIST_CONVERSATIONS))], dialogue: DialogueDep,
    limit: Annotated[int, Query(ge=1, le=100, description="conversations per page")] = 20,
    cursor: Annotated[PageCursor | None, Query(description="`next_cursor` of the previous page")] = None,
    channel: Annotated[Channel | None, Query()] = None,
    handoff: Annotated[bool | None, Query(description="true: handed to a person; false: not")] = None,
    created_after: Annotated[UtcDateTime | None, Query(description="ISO datetime (UTC unless it says), "
                                                                "inclusive")] = None,
    created_before: Annotated[UtcDateTime | None, Query(description="ISO datetime, exclusive")] = None,
) -> ConversationPage:
    """The tenant's conversations, newest first, a page at a time: pass `next_cursor` back as `cursor` (with
    the same filters) until it is null. Each with its message count and the time of its newest message."""
    after = as_utc(created_after) if created_after else None
    before = as_utc(created_before) if created_before else None
    if after is not None and before is not None and after >= before:
        raise RequestValidationError([{"loc": ("query", "created_before"), "type": "value_error",
                                       "msg": "created_before must be later than created_after"}])
    params: dict[str, str | int | bool] = {"tenant_id": principal.tenant_id, "limit": limit}
    for name, value in (("cursor", cursor), ("channel", channel), ("handoff", handoff)):
        if value is not None:
            params[name] = value
    if after is not None:
        params["created_after"] = after.isoformat()
    if before is not None:
        params["created_before"] = before.isoformat()
    return await dialogue.get("/v1/conversations", ConversationPage, **params)


@router.get("/usage", response_model=UsageReport)
async def usage(
    principal: Annotated[Principal, Depends(require(Permission.READ_USAGE))], llm: LlmDep,
    since: Annotated[UtcDateTime | None, Query(description="ISO date or datetime (UTC unless it says); default: "
                                                        "the start of this month")] = None,
) -> UsageReport:
    """The tenant's LLM usage per provider and model: requests, cached requests (they cost nothing), tokens
    and cost in USD."""
    params = {"since": as_utc(since).isoformat()} if since else {}
    return await llm.get("/v1/usage", UsageReport, tenant_id=principal.tenant_id, **params)


@router.delete("/conversations/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response)
async def erase_conversation(
    conversation_id: ConversationId,
    principal: Annotated[Principal, Depends(require(Permission.ERASE_CONVERSATION))],
    dialogue: DialogueDep, llm: LlmDep,
) -> Response:
    """Erase the conversation: its transcript, its state, the cached LLM replies that answered it; its usage
    rows keep their counts without it. 503: retry, and the retry finishes what is left."""
    tenant_id = principal.tenant_id
    try:
        await dialogue.request("DELETE", f"/v1/conversations/{conversation_id}", ConversationErased,
                               params={"tenant_id": tenant_id})
        transcript_erased = True
    except DownstreamRejected as exc:
        if exc.status_code != status.HTTP_404_NOT_FOUND:
            raise
        transcript_erased = False  # unknown, or erased by an earlier DELETE that llm did not finish
    try:
        erased = await llm.request("DELETE", f"/v1/conversations/{conversation_id}", LlmErasure,
                                   params={"tenant_id": tenant_id})
    except DownstreamError as exc:
        done = "its transcript and state are erased, but not" if transcript_erased else "not"
        log.warning("conversation erase unfinished: llm failed", extra={
            "supportbot.tenant": tenant_id, "supportbot.transcript_erased": transcript_erased,
            "supportbot.error": exc.message})
        raise DownstreamError(f"the conversation is {done} its cached replies and usage references, because "
                              f"the llm service failed ({exc.message}); retry the DELETE: it finishes the erase",
                              service=exc.service or "llm", retry_after_s=exc.retry_after_s) from exc
    if not transcript_erased and not erased.found:
        raise NotFound("conversation not found", field="conversation_id")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
