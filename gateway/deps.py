"""The gateway routes' dependencies: who is calling (`current_principal`) and what a route needs (`require`).

Every /v1 route declares its permission as `Annotated[Principal, Depends(require(Permission.X))]`; a key whose
role lacks it gets 403 naming the role, a missing or bad key 401. Widget keys work only from their own origins
(`Origin` must be one of them: else 403) and every other key is refused when a browser page sends it (an `Origin`
header is present): those keys are secrets, for servers. `conversation_access` turns a widget's
`X-Conversation-Token` into what the dialogue service checks a conversation against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway import cors
from gateway.access import ROLE_PERMISSIONS, Permission, Principal, Role
from gateway.limits import Limits
from gateway.tenants import Authenticator, bearer_key
from supportbot.contracts.dialogue import WidgetAccess
from supportbot.errors import BadRequest, Forbidden, Unauthorized

TOKEN_HEADER = "X-Conversation-Token"

_bearer = HTTPBearer(auto_error=False, description="your API key, as `Authorization: Bearer <key>`")


async def current_principal(
    request: Request, response: Response,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller behind the request's API key, held to where the key may be used from and to its rate limits
    (gateway/limits.py: 429 past them; the RateLimit-* headers on the response)."""
    if len(request.headers.getlist("authorization")) > 1:  # a proxy might have read the other one
        raise Unauthorized("send one Authorization header, not several", field="Authorization")
    if credentials is None:  # missing, or not Bearer: say which
        bearer_key(request.headers.get("authorization"))
        raise Unauthorized("Authorization header must be 'Bearer <api key>'", field="Authorization")
    authenticator: Authenticator = request.app.state.authenticator
    limits: Limits = request.app.state.limits
    principal = await limits.authenticate(authenticator, credentials.credentials.strip(),
                                          address=request.client.host if request.client else "unknown")
    origins = request.headers.getlist("origin")
    if principal.role is Role.WIDGET:
        if len(origins) != 1 or origins[0] not in principal.origins:
            shown = f"origin {origins[0]!r}" if len(origins) == 1 else "a request without one Origin header"
            raise Forbidden(f"this widget key works only from its own sites' pages, not from {shown}; its "
                            "origins are set with `supportbot keys create --role widget --origin URL`",
                            field="Origin")
        cors.allow(request.scope, origins[0])
    elif origins:
        raise Forbidden(f"{principal.role.value} keys are secrets for server-side use and are refused from web "
                        "pages (the request carries an Origin header); a page uses a widget key",
                        field="Origin")
    quota = await limits.admit_request(key_id=principal.key_id, tenant_id=principal.tenant_id)
    if quota is not None:
        response.headers.update(quota.headers())
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


@cache
def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency giving the caller when its key's role has `permission`, else 403."""

    async def permitted(principal: PrincipalDep) -> Principal:
        if not principal.may(permission):
            allowed = ", ".join(role.value for role in Role if permission in ROLE_PERMISSIONS[role])
            raise Forbidden(f"{principal.role.value} keys may not do this: it needs the {permission.value!r} "
                            f"permission, which {allowed} keys have", field="Authorization")
        return principal

    permitted.permission = permission  # type: ignore[attr-defined]  # read by the route × role tests
    return permitted


async def conversation_access(
    request: Request, principal: PrincipalDep,
    x_conversation_token: Annotated[str | None, Header(
        alias=TOKEN_HEADER, description="widget keys: the `conversation_token` returned when the conversation "
                                        "was created (other keys need none)")] = None,
) -> WidgetAccess | None:
    """For a widget key, its key id and the SHA-256 of the conversation token it sent; None for other keys."""
    if principal.role is not Role.WIDGET:
        return None
    sent = request.headers.getlist(TOKEN_HEADER)
    if len(sent) != 1 or not sent[0].strip():
        raise BadRequest(f"widget keys must send the conversation's token, returned when it was created, in one "
                         f"{TOKEN_HEADER} header", field=TOKEN_HEADER)
    digest = hashlib.sha256(sent[0].strip().encode()).hexdigest()
    return WidgetAccess(key_id=principal.key_id, token_hash=digest)


ConversationAccessDep = Annotated[WidgetAccess | None, Depends(conversation_access)]
