"""Types shared by several contracts."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

TenantId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
"""A tenant's short slug, e.g. ``demo``."""

ConversationId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


class StrictModel(BaseModel):
    """Requests reject unknown fields, so a misspelt field gets a 422 naming it."""

    model_config = ConfigDict(extra="forbid")


class Intent(BaseModel):
    name: str
    confidence: float = Field(ge=0.0, le=1.0)


class Source(BaseModel):
    """A knowledge-base passage a reply was grounded in."""

    title: str
    path: str
    snippet: str
    score: float = 0.0
