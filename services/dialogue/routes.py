"""dialogue HTTP routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.exceptions import RequestValidationError

from services.dialogue.service import DialogueService
from supportbot.contracts.admin import ConversationErased, ConversationPage, PageCursor, UtcDateTime, as_utc
from supportbot.contracts.common import ConversationId, TenantId
from supportbot.contracts.dialogue import (
    Channel,
    Conversation,
    CreateConversationRequest,
    KeyId,
    Sha256Hex,
    Transcript,
    TurnRequest,
    TurnResponse,
    WidgetAccess,
)
from supportbot.errors import BadRequest, ErrorResponse


def dialogue_service(request: Request) -> DialogueService:
    return request.app.state.dialogue


ServiceDep = Annotated[DialogueService, Depends(dialogue_service)]
router = APIRouter(prefix="/v1", tags=["dialogue"],
                   responses={code: {"model": ErrorResponse} for code in (404, 422, 503, 504)})


@router.post("/conversations", status_code=status.HTTP_201_CREATED, response_model=Conversation)
async def create_conversation(body: CreateConversationRequest, service: ServiceDep) -> Conversation:
    return await service.create_conversation(tenant_id=body.tenant_id, channel=body.channel,
                                             created_by_key=body.created_by_key, token_hash=body.token_hash)


def widget_access(widget_key_id: Annotated[KeyId | None, Query()] = None,
                  widget_token_hash: Annotated[Sha256Hex | None, Query()] = None) -> WidgetAccess | None:
    """A widget key's claim to a conversation (`WidgetAccess`), when the caller names one."""
    if widget_key_id is None and widget_token_hash is None:
        return None
    if widget_key_id is None or widget_token_hash is None:
        missing = "widget_key_id" if widget_key_id is None else "widget_token_hash"
        raise BadRequest(f"{missing}: give widget_key_id and widget_token_hash together", field=missing)
    return WidgetAccess(key_id=widget_key_id, token_hash=widget_token_hash)


@router.get("/conversations/{conversation_id}/messages", response_model=Transcript)
async def get_transcript(conversation_id: ConversationId, tenant_id: Annotated[TenantId, Query()],
                         service: ServiceDep,
                         widget: Annotated[WidgetAccess | None, Depends(widget_access)],
                         originals: Annotated[bool, Query(description="with each message's kept original")] = False,
                         ) -> Transcript:
    return await service.transcript(tenant_id=tenant_id, conversation_id=conversation_id, widget=widget,
                                    originals=originals)


@router.post("/turns", response_model=TurnResponse)
async def post_turn(body: TurnRequest, request: Request, service: ServiceDep) -> TurnResponse:
    return await service.handle_turn(body, disconnected=request.is_disconnected)


@router.get("/conversations", response_model=ConversationPage)
async def list_conversations(
    tenant_id: Annotated[TenantId, Query()], service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20, cursor: Annotated[PageCursor | None, Query()] = None,
    channel: Annotated[Channel | None, Query()] = None, handoff: Annotated[bool | None, Query()] = None,
    created_after: Annotated[UtcDateTime | None, Query()] = None,
    created_before: Annotated[UtcDateTime | None, Query()] = None,
) -> ConversationPage:
    after = as_utc(created_after) if created_after else None
    before = as_utc(created_before) if created_before else None
    if after is not None and before is not None and after >= before:
        raise RequestValidationError([{"loc": ("query", "created_before"), "type": "value_error",
                                       "msg": "created_before must be later than created_after"}])
    return await service.list_conversations(tenant_id=tenant_id, limit=limit, cursor=cursor, channel=channel,
                                            handoff=handoff, created_after=after, created_before=before)


@router.delete("/conversations/{conversation_id}", response_model=ConversationErased)
async def erase_conversation(conversation_id: ConversationId, tenant_id: Annotated[TenantId, Query()],
                             service: ServiceDep) -> ConversationErased:
    return await service.erase_conversation(tenant_id=tenant_id, conversation_id=conversation_id)
