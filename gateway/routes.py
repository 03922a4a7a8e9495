"""Public /v1 routes: authenticate, then hand the work to the dialogue service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Header, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.schemas import ConversationCreated, NewConversation, NewMessage
from gateway.tenants import Authenticator, bearer_key
from supportbot.contracts.common import ConversationId
from supportbot.contracts.dialogue import (
    ClientMessageId,
    Conversation,
    CreateConversationRequest,
    Transcript,
    TurnRequest,
    TurnResponse,
)
from supportbot.errors import ErrorResponse, Unauthorized
from supportbot.http import ServiceClient


_bearer = HTTPBearer(auto_error=False, description="your API key, as `Authorization: Bearer <key>`")


async def current_tenant(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    authenticator: Authenticator = request.app.state.authenticator
    if credentials is None:  # missing, or not Bearer: say which
        bearer_key(request.headers.get("authorization"))
        raise Unauthorized("Authorization header must be 'Bearer <api key>'", field="Authorization")
    return await authenticator.tenant_for(credentials.credentials.strip())


def dialogue_client(request: Request) -> ServiceClient:
    return request.app.state.dialogue


TenantDep = Annotated[str, Depends(current_tenant)]
DialogueDep = Annotated[ServiceClient, Depends(dialogue_client)]

_errors = {code: {"model": ErrorResponse} for code in (401, 404, 409, 422, 503, 504)}
router = APIRouter(prefix="/v1", tags=["conversations"], responses=_errors)


@router.post("/conversations", status_code=status.HTTP_201_CREATED, response_model=ConversationCreated)
async def create_conversation(
    tenant_id: TenantDep, dialogue: DialogueDep, body: Annotated[NewConversation | None, Body()] = None
) -> ConversationCreated:
    request = CreateConversationRequest(tenant_id=tenant_id, channel=(body or NewConversation()).channel)
    conversation = await dialogue.post("/v1/conversations", request, Conversation)
    return ConversationCreated(id=conversation.id, channel=conversation.channel,
                               created_at=conversation.created_at)


@router.post("/conversations/{conversation_id}/messages", response_model=TurnResponse)
async def post_message(
    conversation_id: ConversationId, body: NewMessage, tenant_id: TenantDep, dialogue: DialogueDep,
    idempotency_key: Annotated[ClientMessageId | None, Header()] = None,
) -> TurnResponse:
    turn = TurnRequest(tenant_id=tenant_id, conversation_id=conversation_id, text=body.text,
                       client_message_id=body.client_message_id or idempotency_key)
    return await dialogue.post("/v1/turns", turn, TurnResponse)


@router.get("/conversations/{conversation_id}/messages", response_model=Transcript)
async def get_messages(conversation_id: ConversationId, tenant_id: TenantDep, dialogue: DialogueDep) -> Transcript:
    return await dialogue.get(f"/v1/conversations/{conversation_id}/messages", Transcript, tenant_id=tenant_id)
