"""One error tree and one JSON error shape for every service.

    SupportbotError            500 internal_error
     ├── BadRequest            400 bad_request
     ├── Unauthorized          401 unauthorized
     ├── NotFound              404 not_found
     ├── Conflict              409 conflict
     ├── ServiceUnavailable    503 unavailable             (this service lacks a component it needs)
     ├── BudgetExceeded        429 budget_exceeded         (a tenant's hard monthly budget; `field` names it)
     └── DownstreamError       503 downstream_unavailable  (a service we call is down or broken)
          └── DownstreamTimeout 504 downstream_timeout

Every error leaves a service as ``{"error": {"type", "message", "field"?, "service"?}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    type: str
    message: str
    field: str | None = None
    service: str | None = None


class ErrorResponse(BaseModel):
    """The JSON body of every error response."""

    error: ErrorBody


class SupportbotError(Exception):
    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, *, field: str | None = None, service: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.service = service

    def to_body(self) -> ErrorResponse:
        return ErrorResponse(
            error=ErrorBody(type=self.error_type, message=self.message, field=self.field, service=self.service)
        )


class BadRequest(SupportbotError):
    status_code = 400
    error_type = "bad_request"


class Unauthorized(SupportbotError):
    status_code = 401
    error_type = "unauthorized"


class NotFound(SupportbotError):
    status_code = 404
    error_type = "not_found"


class Conflict(SupportbotError):
    status_code = 409
    error_type = "conflict"


class BudgetExceeded(SupportbotError):
    """A tenant's hard monthly budget would be exceeded; `field` is `monthly_tokens` or `monthly_usd`."""

    status_code = 429
    error_type = "budget_exceeded"


class ServiceUnavailable(SupportbotError):
    """This service cannot do the request now (a component it needs is missing or down)."""

    status_code = 503
    error_type = "unavailable"


class DownstreamError(SupportbotError):
    status_code = 503
    error_type = "downstream_unavailable"


class DownstreamTimeout(DownstreamError):
    status_code = 504
    error_type = "downstream_timeout"


_STATUS_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 429: "rate_limited", 503: "unavailable"}


def _json(status: int, body: ErrorResponse, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body.model_dump(exclude_none=True), headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the one JSON error shape; never leak a traceback."""

    @app.exception_handler(SupportbotError)
    async def _supportbot_error(_: Request, exc: SupportbotError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return _json(exc.status_code, exc.to_body(), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_name(tuple(first.get("loc", ())))
        message = f"{field}: {first.get('msg', 'invalid value')}"
        body = ErrorResponse(error=ErrorBody(type="validation_error", message=message, field=field))
        return _json(422, body)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = ErrorResponse(error=ErrorBody(type=_STATUS_TYPES.get(exc.status_code, "http_error"),
                                             message=str(exc.detail)))
        return _json(exc.status_code, body, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        body = ErrorResponse(error=ErrorBody(type="internal_error", message="internal error"))
        return _json(500, body)
