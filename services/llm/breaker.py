"""Circuit breakers, one per provider, shared by every replica through Redis.

    closed ──(N failures within the window)──▶ open ──(open_s elapsed)──▶ half_open: one probe request
      ▲                                                                     │ success → closed
      └─────────────────────────────────────────────────────────────────────┘ failure → open again

State lives in one Redis hash per provider (`<redis_key_prefix>llm:breaker:<name>`) plus a sorted set of
recent failure times, changed only by Lua scripts, so replicas see the same state and exactly one of them
sends the half-open probe. Without Redis (or while it is down: `SharedRedis.up`) each process keeps the same
state machine in memory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from supportbot.cache import REDIS_ERRORS, SharedRedis

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

# KEYS: state hash, failures zset. ARGV: now, open_s. Returns {allowed (0/1), state}.
_ALLOW = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now = tonumber(ARGV[1])
if state == 'closed' then return {1, state} end
local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '0')
if now - since < tonumber(ARGV[2]) then return {0, state} end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'since', ARGV[1])
return {1, 'half_open'}
"""

# KEYS: state hash, failures zset. ARGV: now, window_s, threshold, member. Returns the new state.
_FAILURE = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now = tonumber(ARGV[1])
if state == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', ARGV[1])
  return 'open'
end
if state == 'open' then return 'open' end
redis.call('ZADD', KEYS[2], now, ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2])) + 1)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', ARGV[1])
  redis.call('DEL', KEYS[2])
  return 'open'
end
return 'closed'
"""

# KEYS: state hash, failures zset.
_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state ~= 'closed' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'since', '0')
  redis.call('DEL', KEYS[2])
end
return 'closed'
"""


@dataclass
class _LocalState:
    state: str = CLOSED
    since: float = 0.0
    failures: list[float] = field(default_factory=list)


class CircuitBreaker:
    """The breaker of one provider; `allow()` before a call, then `success()` or `failure()`."""

    def __init__(self, name: str, *, redis: SharedRedis | None, failures: int, window_s: float,
                 open_s: float, key_prefix: str = "supportbot:") -> None:
        self.name = name
        self.redis = redis
        self.threshold = failures
        self.window_s = window_s
        self.open_s = open_s
        self._keys = [f"{key_prefix}llm:breaker:{name}", f"{key_prefix}llm:breaker:{name}:failures"]
        self._local = _LocalState()
        self._scripts = ({kind: redis.client.register_script(body) for kind, body in
                          (("allow", _ALLOW), ("failure", _FAILURE), ("success", _SUCCESS))}
                         if redis is not None else {})

    @property
    def _shared(self) -> bool:
        return bool(self._scripts) and self.redis is not None and self.redis.up

    def _lost(self, exc: BaseException) -> None:
        """Redis failed under us: this process's own state machine until it answers again."""
        assert self.redis is not None
        self.redis.failed(exc)

    async def allow(self) -> bool:
        """Whether a request may go to the provider now (in half-open: only the one probe)."""
        now = time.time()
        if self._shared:
            try:
                allowed, state = await self._scripts["allow"](keys=self._keys, args=[now, self.open_s])
                return bool(allowed)
            except REDIS_ERRORS as exc:
                self._lost(exc)
        local = self._local
        if local.state == CLOSED:
            return True
        if now - local.since < self.open_s:
            return False
        local.state, local.since = HALF_OPEN, now
        return True

    async def failure(self) -> str:
        now = time.time()
        if self._shared:
            try:
                state = await self._scripts["failure"](
                    keys=self._keys, args=[now, self.window_s, self.threshold, f"{now}:{id(self)}:{time.perf_counter_ns()}"])
                return self._changed(state.decode() if isinstance(state, bytes) else str(state))
            except REDIS_ERRORS as exc:
                self._lost(exc)
        local = self._local
        if local.state == HALF_OPEN:
            local.state, local.since = OPEN, now
        elif local.state == CLOSED:
            local.failures = [t for t in local.failures if t > now - self.window_s] + [now]
            if len(local.failures) >= self.threshold:
                local.state, local.since, local.failures = OPEN, now, []
        return self._changed(local.state)

    async def success(self) -> str:
        if self._shared:
            try:
                await self._scripts["success"](keys=self._keys, args=[])
                return CLOSED
            except REDIS_ERRORS as exc:
                self._lost(exc)
        self._local = _LocalState()
        return CLOSED

    async def state(self) -> str:
        """The current state (for probes and tests)."""
        if self._shared:
            assert self.redis is not None
            try:
                raw = await self.redis.client.hget(self._keys[0], "state")
                return raw.decode() if raw else CLOSED
            except REDIS_ERRORS as exc:
                self._lost(exc)
        return self._local.state

    def _changed(self, state: str) -> str:
        if state == OPEN:
            log.warning("circuit breaker open", extra={"supportbot.provider": self.name})
        return state
