"""Types shared by several contracts."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

TenantId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
"""A tenant's short slug, e.g. ``demo``."""

ConversationId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: str) -> str:
    # PostgreSQL's text cannot hold NUL, and a lone surrogate (JSON "\ud800") has no UTF-8 form: either would
    # fail deep in a driver, a tokenizer or a JSON encoder, as a 500, instead of here as a 422 naming the field.
    bad = _UNSTORABLE.search(value)
    if bad is not None and bad.group() == "\x00":
        raise ValueError("must not contain NUL characters (\\u0000)")
    if bad is not None:
        raise ValueError("must be valid Unicode: a lone surrogate (\\ud800-\\udfff) has no UTF-8 form")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Text = Annotated[str, AfterValidator(_storable)]
"""Text that can be stored, tokenized and sent on: no NUL, no lone surrogates. Lengths are the field's."""
NonBlankText = Annotated[str, AfterValidator(_storable), AfterValidator(_not_blank)]
"""`Text` with something in it besides whitespace: what a customer wrote."""


class StrictModel(BaseModel):
    """Requests reject unknown fields, so a misspelt field gets a 422 naming it."""

    model_config = ConfigDict(extra="forbid")


class Intent(BaseModel):
    name: str
    confidence: float = Field(ge=0.0, le=1.0)


class Source(BaseModel):
    """A knowledge-base passage a reply was grounded in."""

    title: Text = Field(max_length=2000)
    path: Text = Field(max_length=2000)
    snippet: Text = Field(max_length=8000)
    score: float = 0.0
