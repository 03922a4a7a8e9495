"""Request size limits in front of the gateway: plain ASGI, so nothing is buffered and streams pass.

- More than `max_headers` header fields, or a header section (names, values and the `: ` and CRLF of each)
  over `max_header_bytes`: 431, before the app sees the request.
- A body over `max_body_bytes`: 413, at once when `Content-Length` says so, else as soon as the bytes read
  pass the limit (chunked bodies without `Content-Length` are counted as they arrive, never held whole).

These are the limits that hold: uvicorn with httptools hands a 1 MB header section, or 2,000 headers, to
the app (tests/gateway/test_limits_processes.py); with h11 it refuses a head over 16 KiB itself.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supportbot.errors import ErrorBody, ErrorResponse


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the body passes the limit; answered 413 by the app's error handler when
    it is reading the body, else by the middleware."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"the request body is larger than {limit} bytes")


async def _respond(send: Send, status: int, error_type: str, message: str, field: str) -> None:
    body = ErrorResponse(error=ErrorBody(type=error_type, message=message, field=field))
    payload = json.dumps(body.model_dump(exclude_none=True)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_headers: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if len(headers) > self.max_headers:
            await _respond(send, 431, "request_header_fields_too_large",
                           f"the request has {len(headers)} header fields; at most {self.max_headers} are "
                           "accepted (MAX_HEADERS)", "headers")
            return
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self.max_header_bytes:
            await _respond(send, 431, "request_header_fields_too_large",
                           f"the request's headers take {size} bytes; at most {self.max_header_bytes} are "
                           "accepted (MAX_HEADER_BYTES)", "headers")
            return
        declared = _content_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            await _respond(send, 413, "payload_too_large",
                           f"the request body is {declared} bytes; at most {self.max_body_bytes} are accepted "
                           "(MAX_REQUEST_BYTES)", "body")
            return

        received = 0
        started = answered = overflowed = False
        too_large = f"the request body is larger than {self.max_body_bytes} bytes (MAX_REQUEST_BYTES)"

        async def limited_receive() -> Message:
            nonlocal received, overflowed
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    overflowed = True
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        async def limited_send(message: Message) -> None:
            nonlocal started, answered
            if overflowed:
                # Whatever the app answers to a body cut short (its error handler's 413, say), the client
                # gets this one, in one shape.
                if message["type"] == "http.response.start" and not started:
                    started = answered = True
                    await _respond(send, 413, "payload_too_large", too_large, "body")
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, limited_send)
        except BodyTooLarge:
            if not started:
                await _respond(send, 413, "payload_too_large", too_large, "body")
            elif not answered:
                raise


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed one before it gets here
    return None
