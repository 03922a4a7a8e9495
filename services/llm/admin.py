"""What the gateway's admin routes ask of llm: a tenant's usage, and erasing one conversation's LLM data.

Erasing a conversation here means: every response-cache entry that answered one of its generations is deleted,
and its usage rows keep their counts but lose the conversation id. To know the entries, `ConversationErasure`
keeps an index per (tenant, conversation): a Redis set of the cache keys its generations looked up (a hit, or a
miss it then filled), expiring with the cache's TTL, so it never outlives the entries it names.

An entry is keyed by the prompt, not by the conversation: another conversation with an identical prompt (the same
first question, say) shares it. Erasing deletes it all the same — the safe choice: nothing that answered the
erased conversation stays, and the other conversation's next identical question is simply generated again.

Usage events are written in the background (`accounting.UsageRecorder`), on whichever replica made them; one
may still be queued (or spooled during a database outage) when the erase runs. So the erase also leaves a
marker per (tenant, conversation) for `ERASED_TTL_S`, and every recorder clears the conversation id of marked
events before it stores them (`scrub`).

Redis configured but not answering: the index and markers of this process are kept in memory and written to
Redis when it answers again, but the sets other replicas wrote cannot be read, so an erase then answers 503
(retry) rather than report success with entries left behind. Without Redis at all there is one replica and
its memory is the whole truth.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.llm import storage
from services.llm.accounting import UsageRecord, UsageRecorder
from services.llm.budgets import month_start
from services.llm.response_cache import ResponseCache
from supportbot.cache import REDIS_ERRORS, SharedRedis
from supportbot.contracts.admin import LlmErasure, UsageLine, UsageReport, UsageTotals
from supportbot.db import transaction
from supportbot.errors import DatabaseUnavailable, ServiceUnavailable

log = logging.getLogger(__name__)

ERASED_TTL_S = 30 * 24 * 3600
"""How long an erased conversation's id is stripped from usage events still arriving (queued, spooled)."""
_MEMORY_PRUNE_AT = 10_000


async def usage_report(sessions: async_sessionmaker[AsyncSession], *, tenant_id: str,
                       since: datetime | None) -> UsageReport:
    """The tenant's usage per provider and model since `since` (default: the start of this month, UTC)."""
    since = since or month_start()
    async with sessions() as session:
        rows = await storage.usage_summary(session, tenant_id, since)
    lines = [UsageLine(provider=r["provider"], model=r["model"], requests=int(r["requests"]),
                       cached_requests=int(r["cached_requests"] or 0), prompt_tokens=int(r["prompt_tokens"] or 0),
                       completion_tokens=int(r["completion_tokens"] or 0),
                       cost_usd=round(float(r["cost_usd"] or 0), 8)) for r in rows]
    totals = UsageTotals(requests=sum(line.requests for line in lines),
                         cached_requests=sum(line.cached_requests for line in lines),
                         prompt_tokens=sum(line.prompt_tokens for line in lines),
                         completion_tokens=sum(line.completion_tokens for line in lines),
                         cost_usd=round(sum(line.cost_usd for line in lines), 8))
    return UsageReport(tenant_id=tenant_id, since=since, totals=totals, by_provider_model=lines)


class ConversationErasure:
    """The per-conversation index of cache keys, the erased markers, and the erase itself."""

    def __init__(self, *, redis: SharedRedis | None, ttl_s: int, key_prefix: str = "supportbot:") -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.key_prefix = key_prefix
        self._index: dict[str, tuple[float, set[str]]] = {}
        """Index sets kept here (no Redis, or while it is down): set key -> (expires at, cache keys)."""
        self._erased: dict[str, float] = {}
        """Markers kept here: marker key -> expires at."""
        if redis is not None:
            redis.on_recovery(self._write_back)

    def _set_key(self, tenant_id: str, conversation_id: str) -> str:
        return f"{self.key_prefix}llm:conversation:{tenant_id}:{conversation_id}:cache-keys"

    def _marker_key(self, tenant_id: str, conversation_id: str) -> str:
        return f"{self.key_prefix}llm:conversation:{tenant_id}:{conversation_id}:erased"

    @property
    def _shared(self) -> bool:
        return self.redis is not None and self.redis.up

    async def remember(self, tenant_id: str, conversation_id: str, cache_key: str) -> None:
        """Note that `cache_key` answered (or is being filled for) the conversation."""
        set_key = self._set_key(tenant_id, conversation_id)
        if self._shared:
            assert self.redis is not None
            try:
                pipe = self.redis.client.pipeline(transaction=True)
                pipe.sadd(set_key, cache_key)
                pipe.expire(set_key, self.ttl_s)
                await pipe.execute()
                return
            except REDIS_ERRORS as exc:
                self.redis.failed(exc)
        now = time.monotonic()
        if len(self._index) >= _MEMORY_PRUNE_AT:
            self._index = {k: v for k, v in self._index.items() if v[0] > now}
        _, keys = self._index.get(set_key, (0.0, set()))
        keys.add(cache_key)
        self._index[set_key] = (now + self.ttl_s, keys)

    async def erase(self, *, tenant_id: str, conversation_id: str, cache: ResponseCache,
                    recorder: UsageRecorder, sessions: async_sessionmaker[AsyncSession]) -> LlmErasure:
        """Delete the conversation's cache entries and clear its id from its usage rows.

        Idempotent: run again after a failure, it finishes the job (the index goes last)."""
        if self.redis is not None and not self.redis.up:
            raise ServiceUnavailable("redis does not answer, so the conversation's cached replies cannot all be "
                                     "found; retry the erase", service="llm")
        set_key = self._set_key(tenant_id, conversation_id)
        await self._mark(tenant_id, conversation_id)
        keys = set(self._index.get(set_key, (0.0, set()))[1])
        if self.redis is not None:
            try:
                keys |= {k.decode() for k in await self.redis.client.smembers(set_key)}
            except REDIS_ERRORS as exc:
                self.redis.failed(exc)
                raise ServiceUnavailable("redis stopped answering during the erase; retry it",
                                         service="llm") from exc
        for key in keys:
            await cache.cache.delete(cache.stored_key(key))
        await recorder.flush()  # this replica's queued events are stored (or spooled) now
        if recorder.spool.pending():
            raise DatabaseUnavailable("usage events from a database outage are still being written; retry the "
                                      "erase shortly", service="llm")
        async with transaction(sessions) as session:
            rows = await storage.clear_conversation(session, tenant_id=tenant_id, conversation_id=conversation_id)
        self._index.pop(set_key, None)
        if self.redis is not None:
            try:
                await self.redis.client.delete(set_key)
            except REDIS_ERRORS as exc:  # the set only names keys already deleted; it expires with them
                self.redis.failed(exc)
        log.info("conversation's LLM data erased", extra={"supportbot.tenant": tenant_id,
                                                          "supportbot.cache_entries": len(keys),
                                                          "supportbot.usage_rows": rows})
        return LlmErasure(conversation_id=conversation_id, cache_entries=len(keys), usage_rows=rows)

    async def scrub(self, records: list[UsageRecord]) -> list[UsageRecord]:
        """`records` with the conversation id cleared where that conversation has been erased."""
        pairs = {(r.tenant_id, r.conversation_id) for r in records if r.conversation_id is not None}
        if not pairs:
            return records
        now = time.monotonic()
        erased = {pair for pair in pairs if self._erased.get(self._marker_key(*pair), 0.0) > now}
        rest = [pair for pair in pairs if pair not in erased]
        if rest and self._shared:
            assert self.redis is not None
            try:
                found = await self.redis.client.mget([self._marker_key(*pair) for pair in rest])
                erased |= {pair for pair, value in zip(rest, found, strict=True) if value is not None}
            except REDIS_ERRORS as exc:
                self.redis.failed(exc)
        if not erased:
            return records
        return [replace(r, conversation_id=None) if (r.tenant_id, r.conversation_id) in erased else r
                for r in records]

    async def _mark(self, tenant_id: str, conversation_id: str) -> None:
        marker = self._marker_key(tenant_id, conversation_id)
        self._erased[marker] = time.monotonic() + ERASED_TTL_S
        if self._shared:
            assert self.redis is not None
            try:
                await self.redis.client.set(marker, b"1", ex=ERASED_TTL_S)
            except REDIS_ERRORS as exc:
                self.redis.failed(exc)

    async def _write_back(self) -> bool:
        """Redis answers again: what this process kept meanwhile goes there."""
        assert self.redis is not None
        now = time.monotonic()
        index = {k: v for k, v in self._index.items() if v[0] > now}
        erased = {k: v for k, v in self._erased.items() if v > now}
        if not index and not erased:
            self._index.clear()
            return False
        pipe = self.redis.client.pipeline(transaction=False)
        for set_key, (expires_at, keys) in index.items():
            pipe.sadd(set_key, *keys)
            pipe.expire(set_key, max(1, int(expires_at - now)))
        for marker, expires_at in erased.items():
            pipe.set(marker, b"1", ex=max(1, int(expires_at - now)))
        await pipe.execute()  # a failure keeps everything here for the next attempt
        self._index.clear()
        self._erased = {}
        return True
