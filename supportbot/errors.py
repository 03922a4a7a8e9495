"""One error tree and one JSON error shape for every service.

    SupportbotError            500 internal_error
     ├── BadRequest            400 bad_request
     ├── Unauthorized          401 unauthorized
     ├── Forbidden             403 forbidden               (a valid key whose role or origin may not do this)
     ├── NotFound              404 not_found
     ├── Conflict              409 conflict
     ├── ServiceUnavailable    503 unavailable             (this service lacks a component it needs)
     │    └── DatabaseUnavailable 503 database_unavailable (its database cannot be reached now)
     ├── BudgetExceeded        429 budget_exceeded         (a tenant's hard monthly budget; `field` names it)
     ├── RateLimited           429 rate_limited            (a gateway rate limit; `field` names its setting)
     └── DownstreamError       503 downstream_unavailable  (a service we call is down or broken)
          └── DownstreamTimeout 504 downstream_timeout

Every error leaves a service as ``{"error": {"type", "message", "field"?, "service"?}}``. Every 503 carries
`Retry-After` (the error's `retry_after_s`, a downstream's own value passed on, else `RETRY_AFTER_S`).
A database that cannot be reached (`supportbot.db.is_outage`) is a 503 `database_unavailable` wherever it is
met, never a 500; it is logged at most every `OUTAGE_LOG_EVERY_S` per process, by exception class only (a
driver's message can hold a host, a statement's parameters hold customer text).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from supportbot.db import is_outage

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
"""What a 503 tells clients to wait before retrying, unless the error knows better."""
OUTAGE_LOG_EVERY_S = 10.0


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
    retry_after_s: int | None = None
    """Sent as `Retry-After` (a 503 without one gets `RETRY_AFTER_S`)."""

    def __init__(self, message: str, *, field: str | None = None, service: str | None = None,
                 retry_after_s: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.service = service
        self.headers = headers or {}
        """More response headers (a rate limit's RateLimit-* fields)."""
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

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


class Forbidden(SupportbotError):
    """The caller is known but may not do this: its key's role lacks the permission, or the origin is wrong."""

    status_code = 403
    error_type = "forbidden"


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


class RateLimited(SupportbotError):
    """A rate limit was reached; `field` names its setting, `headers` carry its RateLimit-* fields and
    `retry_after_s` when there is room again."""

    status_code = 429
    error_type = "rate_limited"


class ServiceUnavailable(SupportbotError):
    """This service cannot do the request now (a component it needs is missing or down)."""

    status_code = 503
    error_type = "unavailable"
    retry_after_s = RETRY_AFTER_S


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached or take work now; the client should retry after `Retry-After`."""

    error_type = "database_unavailable"

    def __init__(self, message: str = "the database is unavailable; retry shortly", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class DownstreamError(SupportbotError):
    """A service we call is down or broken. `error_type` may keep the downstream's own 503 type (say,
    `database_unavailable`), so the caller learns the root cause."""

    status_code = 503
    error_type = "downstream_unavailable"
    retry_after_s = RETRY_AFTER_S

    def __init__(self, message: str, *, error_type: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        if error_type is not None:
            self.error_type = error_type


class DownstreamTimeout(DownstreamError):
    status_code = 504
    error_type = "downstream_timeout"
    retry_after_s = None


_STATUS_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 429: "rate_limited", 503: "unavailable"}


def _json(status: int, body: ErrorResponse, headers: dict[str, str] | None = None) -> JSONResponse:
    if status == 503 and not any(name.lower() == "retry-after" for name in headers or {}):
        headers = {**(headers or {}), "Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(status_code=status, content=body.model_dump(exclude_none=True), headers=headers)


class _OutageLog:
    """One warning per `every_s` while the database is away, with how many requests it refused since."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last = float("-inf")
        self._refused = 0

    def report(self, exc: BaseException) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        orig = getattr(exc, "orig", None)
        log.warning("database unavailable, answering 503", extra={
            "error.type": type(exc).__name__,
            "supportbot.db_error": type(orig).__name__ if orig is not None else None,
            "supportbot.sqlstate": getattr(orig, "sqlstate", None),
            "supportbot.refused": self._refused})
        self._refused = 0


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to the one JSON error shape; never leak a traceback."""

    outages = _OutageLog(OUTAGE_LOG_EVERY_S)

    @app.exception_handler(SupportbotError)
    async def _supportbot_error(_: Request, exc: SupportbotError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
        headers.update(exc.headers)
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, DatabaseUnavailable):
            outages.report(exc.__cause__ or exc)
        return _json(exc.status_code, exc.to_body(), headers or None)

    async def _database_error(request: Request, exc: Exception) -> JSONResponse:
        if not is_outage(exc):
            return await _unexpected(request, exc)
        outages.report(exc)
        error = DatabaseUnavailable()
        return _json(error.status_code, error.to_body(), {"Retry-After": str(RETRY_AFTER_S)})

    # Registered on their classes (not left to the catch-all below), so that they are answered here and not
    # re-raised to the server as unhandled, which would log a traceback holding the driver's message.
    app.add_exception_handler(SQLAlchemyError, _database_error)
    app.add_exception_handler(OSError, _database_error)

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
