"""Exact-match response cache: one key per tenant, model, whole conversation and generation parameters."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel

from supportbot.cache import Cache
from supportbot.contracts.llm import GenerateRequest


class CachedAnswer(BaseModel):
    text: str
    model: str
    provider: str


def cache_key(request: GenerateRequest, *, model: str, max_tokens: int) -> str:
    """Tenant-scoped key; message text is whitespace-normalized so trivial differences still hit."""
    material = {
        "model": model,
        "messages": [(m.role, " ".join(m.content.split())) for m in request.messages],
        "temperature": request.temperature,
        "max_tokens": max_tokens,
        "knowledge": [(s.path, s.snippet) for s in request.context.knowledge],
        "language": request.context.language,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return f"supportbot:llm:v1:{request.tenant_id}:{digest}"


def is_cacheable(request: GenerateRequest) -> bool:
    return request.cache and request.temperature == 0.0


class ResponseCache:
    def __init__(self, cache: Cache, ttl_s: int) -> None:
        self.cache = cache
        self.ttl_s = ttl_s

    async def get(self, key: str) -> CachedAnswer | None:
        raw = await self.cache.get(key)
        if raw is None:
            return None
        try:
            return CachedAnswer.model_validate_json(raw)
        except ValueError:
            await self.cache.delete(key)
            return None

    async def put(self, key: str, answer: CachedAnswer) -> None:
        await self.cache.set(key, answer.model_dump_json().encode(), self.ttl_s)
