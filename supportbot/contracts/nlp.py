"""nlp service contract: `POST /v1/analyze`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from supportbot.contracts.common import Intent, NonBlankText, StrictModel, TenantId, Text


class AnalyzeRequest(StrictModel):
    text: NonBlankText = Field(min_length=1, max_length=4000)
    tenant_id: TenantId | None = None
    """Picks the tenant's own intent model when it has one (else the default). nlp keeps no tenants table: its
    callers (dialogue) have checked that the tenant exists."""


class Entity(BaseModel):
    type: str
    value: str
    start: int
    end: int
    normalized: str | None = None


class Sentiment(BaseModel):
    score: float = Field(ge=-1.0, le=1.0, description="VADER compound score, -1 (negative) to 1 (positive)")
    label: str
    frustration: float = Field(ge=0.0, le=1.0)


class PiiSpan(BaseModel):
    type: str
    start: int
    end: int


class AnalyzeResponse(BaseModel):
    intent: Intent
    out_of_scope: bool
    alternatives: list[Intent] = []
    entities: list[Entity] = []
    sentiment: Sentiment
    language: str
    pii: list[PiiSpan] = []
    redacted_text: str
    injection_score: float = Field(ge=0.0, le=1.0, description="prompt-injection likelihood, a guardrail signal")
    model: str


class RedactRequest(StrictModel):
    text: Text = Field(min_length=1, max_length=32_000)


class RedactResponse(BaseModel):
    text: str
    redactions: list[PiiSpan]


class EmbedRequest(StrictModel):
    texts: list[Annotated[Text, Field(max_length=32_000)]] = Field(min_length=1, max_length=256)


class EmbedResponse(BaseModel):
    model: str
    dimension: int
    vectors: list[list[float]]
