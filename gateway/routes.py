"""Public /v1 routes: authenticate, check the key's permission, then hand the work to the dialogue service.

Each route names its permission with `require(Permission.X)` (gateway/deps.py, the roles in gateway/access.py)."""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Query, Request, status

from gateway.access import Permission, Principal, Role
from gateway.deps import ConversationAccessDep, require
from gateway.limits import Limits
from gateway.schemas import ConversationCreated, NewConversation, NewMessage
from gateway.tenants import new_conversation_token
from supportbot.contracts.common import ConversationId
from supportbot.contracts.dialogue import (
    ClientMessageId,
    Conversation,
    CreateConversationRequest,
    Transcript,
    TurnRequest,
    TurnResponse,
)
from supportbot.errors import ErrorResponse, Forbidden
from supportbot.http import DownstreamRejected, ServiceClient


def dialogue_client(request: Request) -> ServiceClient:
    return request.app.state.dialogue


def rate_limits(request: Request) -> Limits:
    return request.app.state.limits


DialogueDep = Annotated[ServiceClient, Depends(dialogue_client)]
LimitsDep = Annotated[Limits, Depends(rate_limits)]

_errors = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 422, 429, 431, 503, 504)}
router = APIRouter(prefix="/v1", tags=["conversations"], responses=_errors)


@router.post("/conversations", status_code=status.HTTP_201_CREATED, response_model=ConversationCreated)
async def create_conversation(
    principal: Annotated[Principal, Depends(require(Permission.CREATE_CONVERSATION))], dialogue: DialogueDep,
    body: Annotated[NewConversation | None, Body()] = None,
) -> ConversationCreated:
    """A widget key gets the conversation's token, needed for every later call about it."""
    body = body or NewConversation()
    token = new_conversation_token() if principal.role is Role.WIDGET else None
    channel = body.channel if "channel" in body.model_fields_set or token is None else "web"
    request = CreateConversationRequest(tenant_id=principal.tenant_id, channel=channel,
                                        created_by_key=principal.key_id,
                                        token_hash=hashlib.sha256(token.encode()).hexdigest() if token else None)
    conversation = await dialogue.post("/v1/conversations", request, Conversation)
    return ConversationCreated(id=conversation.id, channel=conversation.channel,
                               created_at=conversation.created_at, conversation_token=token)


@router.post("/conversations/{conversation_id}/messages", response_model=TurnResponse)
async def post_message(
    conversation_id: ConversationId, body: NewMessage,
    principal: Annotated[Principal, Depends(require(Permission.POST_TURN))], widget: ConversationAccessDep,
    dialogue: DialogueDep, limits: LimitsDep, idempotency_key: Annotated[ClientMessageId | None, Header()] = None,
) -> TurnResponse:
    """429 once the key's or the tenant's LLM tokens of the minute are spent (TOKEN_LIMIT_PER_KEY,
    TOKEN_LIMIT_PER_TENANT); the tokens a turn spends (`usage`) are charged to both after it."""
    await limits.admit_turn(key_id=principal.key_id, tenant_id=principal.tenant_id)
    turn = TurnRequest(tenant_id=principal.tenant_id, conversation_id=conversation_id, text=body.text,
                       client_message_id=body.client_message_id or idempotency_key, widget=widget)
    try:
        answer = await dialogue.post("/v1/turns", turn, TurnResponse)
    except DownstreamRejected as exc:
        if exc.field == "client_message_id" and body.client_message_id is None:  # it came as the header
            exc.field, exc.message = "Idempotency-Key", exc.message.replace("client_message_id", "Idempotency-Key")
        raise
    if answer.usage is not None and not answer.duplicate:  # a replayed answer cost nothing now
        await limits.charge_tokens(key_id=principal.key_id, tenant_id=principal.tenant_id,
                                   tokens=answer.usage.prompt_tokens + answer.usage.completion_tokens)
    return answer


@router.get("/conversations/{conversation_id}/messages", response_model=Transcript)
async def get_messages(
    conversation_id: ConversationId, principal: Annotated[Principal, Depends(require(Permission.READ_TRANSCRIPT))],
    widget: ConversationAccessDep, dialogue: DialogueDep,
    originals: Annotated[bool, Query(description="admin keys: each message's original, for tenants that keep "
                                                 "them encrypted (else `original` is null)")] = False,
) -> Transcript:
    """Texts are stored with personal data redacted ([CARD], [EMAIL], ...); `originals=true` needs an admin key."""
    if originals and not principal.may(Permission.READ_ORIGINALS):
        raise Forbidden(f"{principal.role.value} keys may not read originals: originals=true needs an admin key",
                        field="originals")
    params: dict[str, str | bool] = {"widget_key_id": widget.key_id,
                                     "widget_token_hash": widget.token_hash} if widget else {}
    if originals:
        params["originals"] = True
    return await dialogue.get(f"/v1/conversations/{conversation_id}/messages", Transcript,
                              tenant_id=principal.tenant_id, **params)
