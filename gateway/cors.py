"""CORS per key, as plain ASGI middleware (streams pass untouched).

A preflight (`OPTIONS` with `Access-Control-Request-Method`) carries no key, so it is answered for any origin that
some valid widget key lists (`gateway.tenants.WidgetOrigins`, a cached read); the actual request is then held to
its own key's origins by `gateway.deps.current_principal`, which marks the origin allowed for this response only
when the key is a widget key listing it. No response ever says `*`, none allows credentials (widgets send their
key in `Authorization`, not cookies), and every response varies on `Origin`.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supportbot.errors import ErrorBody, ErrorResponse, ServiceUnavailable

ALLOWED_METHODS = ("GET", "POST")
ALLOWED_HEADERS = ("authorization", "content-type", "idempotency-key", "x-conversation-token")
EXPOSED_HEADERS = "Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, RateLimit-Policy"
PREFLIGHT_MAX_AGE_S = 600
_SCOPE_KEY = "supportbot.cors"


def allow(scope: Scope, origin: str) -> None:
    """Let this request's response be read by a page from `origin` (called once its key allows that)."""
    marks = scope.get(_SCOPE_KEY)
    if marks is not None:
        marks["origin"] = origin


def _refused(status: int, message: str, headers: dict[str, str]) -> Response:
    body = ErrorResponse(error=ErrorBody(type="forbidden" if status == 403 else "unavailable", message=message,
                                         field="Origin" if status == 403 else None))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


class CorsMiddleware:
    """Answers preflights and adds `Access-Control-Allow-Origin` where a widget key allowed the origin.

    Reads the origins of widget keys from `app.state.widget_origins` (a `WidgetOrigins`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers and "origin" in headers:
            response = await self._preflight(scope, headers)
            await response(scope, receive, send)
            return
        marks: dict[str, str] = {}
        scope[_SCOPE_KEY] = marks

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers.add_vary_header("Origin")
                origin = marks.get("origin")
                if origin is not None:
                    response_headers["Access-Control-Allow-Origin"] = origin
                    response_headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, headers: Headers) -> Response:
        vary = {"Vary": "Origin"}
        origins = headers.getlist("origin")
        method = headers["access-control-request-method"].strip().upper()
        asked = {h.strip().lower() for h in headers.get("access-control-request-headers", "").split(",") if h.strip()}
        if len(origins) != 1:
            return _refused(403, "a preflight must carry one Origin header", vary)
        if method not in ALLOWED_METHODS:
            return _refused(403, f"method {method} is not allowed from web pages", vary)
        if not asked <= set(ALLOWED_HEADERS):
            return _refused(403, f"headers {', '.join(sorted(asked - set(ALLOWED_HEADERS)))} are not allowed from "
                                 f"web pages (allowed: {', '.join(ALLOWED_HEADERS)})", vary)
        try:
            listed = await scope["app"].state.widget_origins.allows(origins[0])
        except ServiceUnavailable as exc:
            return _refused(503, exc.message, {**vary, "Retry-After": str(exc.retry_after_s)})
        if not listed:
            return _refused(403, f"origin {origins[0]!r} is not one of any widget key's origins", vary)
        return Response(status_code=204, headers={
            **vary,
            "Access-Control-Allow-Origin": origins[0],
            "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        })
