"""One deadline per turn, travelling with every internal call.

The gateway starts the clock when a turn arrives (`TURN_DEADLINE_S`); every internal request carries what is
left in `X-Supportbot-Deadline-Ms` (relative milliseconds, so the pods' clocks need not agree). Each service's
`DeadlineMiddleware` turns that header back into an absolute `time.monotonic()` deadline held in a contextvar
for the request, `remaining_s()` reads it, and `supportbot.http.ServiceClient` sends the rest on and never waits
past it. Without a deadline (a request that carried none) everything keeps its own timeouts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

HEADER = "X-Supportbot-Deadline-Ms"
MAX_DEADLINE_S = 300.0
"""A deadline further away than this is taken as this (a caller cannot hold a service for hours)."""
CALLER_GRACE_S = 1.0
"""The longest a caller waits past the deadline it sent (the gateway's wait for dialogue); after it, it is gone."""

_deadline: ContextVar[float | None] = ContextVar("supportbot_deadline", default=None)


def current() -> float | None:
    """The request's absolute deadline on the `time.monotonic()` clock; None when it has none."""
    return _deadline.get()


def remaining_s() -> float | None:
    """Seconds left before the request's deadline (negative once it passed); None when it has none."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


def expired() -> bool:
    """Whether the request had a deadline and it has passed."""
    left = remaining_s()
    return left is not None and left <= 0


def caller_gone() -> bool:
    """Whether the request's deadline passed longer ago than any caller waits (`CALLER_GRACE_S`): nobody will
    read the answer. (A caller's timer runs late on a busy loop as ours do: a little past the deadline it may
    still be there.)"""
    left = remaining_s()
    return left is not None and left < -CALLER_GRACE_S


@contextmanager
def within(seconds: float | None) -> Iterator[float | None]:
    """Run the block with a deadline `seconds` from now, never later than the current one (None: keep it)."""
    deadline = _deadline.get()
    if seconds is not None:
        mine = time.monotonic() + seconds
        deadline = mine if deadline is None else min(deadline, mine)
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


def header_value(seconds: float) -> str:
    """`seconds` as the header's whole milliseconds (never negative)."""
    return str(max(0, int(seconds * 1000)))


def parse_header(value: str, *, max_s: float = MAX_DEADLINE_S) -> float:
    """The header's seconds, clamped to `max_s`; ValueError for anything but a whole number of milliseconds."""
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise ValueError(f"{HEADER} must be a whole number of milliseconds, 0 or more")
    return min(int(value) / 1000, max_s)


DeadlineFor = Callable[[Scope], float | None]
"""A public door's own rule: the deadline in seconds it gives a request (None: none)."""


class DeadlineMiddleware:
    """Sets the request's deadline: from `X-Supportbot-Deadline-Ms`, or — at a public door, where callers are
    not trusted to say it — from `deadline_for(scope)`, the header then ignored. A bad header is a 400 naming
    it. Plain ASGI, so streams pass untouched."""

    def __init__(self, app: ASGIApp, *, deadline_for: DeadlineFor | None = None,
                 max_s: float = MAX_DEADLINE_S) -> None:
        self.app = app
        self.deadline_for = deadline_for
        self.max_s = max_s
        self._header = HEADER.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        seconds: float | None
        if self.deadline_for is not None:
            seconds = self.deadline_for(scope)
        else:
            raw = next((v for k, v in scope["headers"] if k == self._header), None)
            try:
                seconds = parse_header(raw.decode("latin-1"), max_s=self.max_s) if raw is not None else None
            except ValueError as exc:
                await _bad_request(send, str(exc))
                return
        # Always set, also to None: a request without a deadline must not inherit one from the task it runs in
        # (in-process transports run a downstream app inside its caller's task).
        token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
        try:
            await self.app(scope, receive, send)
        finally:
            _deadline.reset(token)


async def _bad_request(send: Send, message: str) -> None:
    body = json.dumps({"error": {"type": "bad_request", "message": message, "field": HEADER}}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
