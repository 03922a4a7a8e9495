"""The internal services' door: a shared secret (`SERVICE_TOKEN`) in `X-Supportbot-Service-Token`.

nlp, dialogue and llm answer only callers that show it, on every path but the probes (`/healthz`, `/readyz`,
which orchestrators call without credentials); `/docs` and `/openapi.json` are closed too. The comparison is
`hmac.compare_digest`, so the time it takes says nothing of how much of a guess was right. A request without
the header, with a wrong value or with the header twice gets 401 in the one JSON error shape, naming the header.
Plain ASGI, so streamed answers pass untouched. The gateway authenticates API keys instead and only sends the
token (`supportbot.http.service_client`).
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from supportbot.errors import ErrorBody, ErrorResponse
from supportbot.settings import GENERATE_SERVICE_TOKEN, CommonSettings

HEADER = "X-Supportbot-Service-Token"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_HEADER_KEY = HEADER.lower().encode("latin-1")


class ServiceTokenMissing(RuntimeError):
    """An internal service was started without `SERVICE_TOKEN`; it refuses to serve."""


def required_token(service_name: str, settings: CommonSettings) -> str:
    """The service token from `settings`; raises `ServiceTokenMissing`, saying how to make one, when unset."""
    if settings.service_token is None:
        raise ServiceTokenMissing(
            f"{service_name} refuses to start without SERVICE_TOKEN, the secret every internal call must show "
            f"(header {HEADER}). Generate one with `{GENERATE_SERVICE_TOKEN}` and give the same value to all four "
            "services (`supportbot up` makes one for its children when none is set)")
    return settings.service_token.get_secret_value()


def token_headers(settings: CommonSettings) -> dict[str, str]:
    """The header that calls to an internal service carry (none when no token is set)."""
    return {HEADER: settings.service_token.get_secret_value()} if settings.service_token else {}


class ServiceTokenMiddleware:
    """401 for every HTTP request but the probes that does not carry the token exactly once."""

    def __init__(self, app: ASGIApp, *, token: str, service: str) -> None:
        self.app = app
        self._token = token.encode("utf-8")
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        shown = [value for name, value in scope["headers"] if name == _HEADER_KEY]
        # compare_digest runs in time independent of where the values differ (not of their lengths).
        if len(shown) == 1 and hmac.compare_digest(shown[0], self._token):
            await self.app(scope, receive, send)
            return
        await self._refuse(send, "missing" if not shown else "wrong")

    async def _refuse(self, send: Send, what: str) -> None:
        body = ErrorResponse(error=ErrorBody(
            type="unauthorized", field=HEADER, service=self._service,
            message=f"{what} service token: internal calls must carry the {HEADER} header (SERVICE_TOKEN)"))
        payload = json.dumps(body.model_dump(exclude_none=True)).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"www-authenticate", HEADER.encode("latin-1"))]})
        await send({"type": "http.response.body", "body": payload})
