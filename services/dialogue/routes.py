"""dialogue HTTP routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from services.dialogue.service import DialogueService
from supportbot.contracts.common import ConversationId, TenantId
from supportbot.contracts.dialogue import Conversation, CreateConversationRequest, Transcript, TurnRequest, TurnResponse
from supportbot.errors import ErrorResponse


def dialogue_service(request: Request) -> DialogueService:
    return request.app.state.dialogue


ServiceDep = Annotated[DialogueService, Depends(dialogue_service)]
router = APIRouter(prefix="/v1", tags=["dialogue"],
                   responses={code: {"model": ErrorResponse} for code in (404, 422, 503, 504)})


@router.post("/conversations", status_code=status.HTTP_201_CREATED, response_model=Conversation)
async def create_conversation(body: CreateConversationRequest, service: ServiceDep) -> Conversation:
    return await service.create_conversation(tenant_id=body.tenant_id, channel=body.channel)


@router.get("/conversations/{conversation_id}/messages", response_model=Transcript)
async def get_transcript(conversation_id: ConversationId, tenant_id: Annotated[TenantId, Query()],
                         service: ServiceDep) -> Transcript:
    return await service.transcript(tenant_id=tenant_id, conversation_id=conversation_id)


@router.post("/turns", response_model=TurnResponse)
async def post_turn(body: TurnRequest, service: ServiceDep) -> TurnResponse:
    return await service.handle_turn(body)
