"""Pooled HTTP clients for calling another supportbot service.

One `ServiceClient` per downstream, built once in a lifespan, with explicit connect/read timeouts.
Failures become `DownstreamError` (503) or `DownstreamTimeout` (504) naming the service; a 4xx from the
downstream is passed on with its own status and message, and a 503 with its type, message and `Retry-After`.

Within a request's deadline (`supportbot.deadline`) each call tells the downstream what is left
(`X-Supportbot-Deadline-Ms`) and waits at most that, less `deadline_margin_s`; with no time left it is not
sent at all (`DeadlinePassed`).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from supportbot import deadline
from supportbot.errors import DownstreamError, DownstreamTimeout, SupportbotError
from supportbot.health import DOWNSTREAM_READY_TIMEOUT_S, Health
from supportbot.service_auth import HEADER as SERVICE_TOKEN_HEADER
from supportbot.settings import CommonSettings
from supportbot.telemetry import instrument_client

ResponseT = TypeVar("ResponseT", bound=BaseModel)

DEADLINE_MARGIN_S = 0.05
"""What a caller keeps back from its deadline by default, to read the answer and send its own."""
MIN_CALL_S = 0.01
"""A call with less time than this left is not sent."""


class DeadlinePassed(DownstreamTimeout):
    """The call was not sent: the request's deadline leaves no time for it (it says nothing of the downstream)."""


class DownstreamRejected(SupportbotError):
    """A downstream answered 4xx: the caller gets the same status and message."""

    def __init__(self, status_code: int, error_type: str, message: str, *, field: str | None, service: str,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message, field=field, service=service, retry_after_s=retry_after_s)
        self.status_code = status_code
        self.error_type = error_type


class ServiceClient:
    """Calls one downstream service over a pooled `httpx.AsyncClient`."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        deadline_margin_s: float = DEADLINE_MARGIN_S,
        service_token: str | None = None,
    ) -> None:
        """`deadline_margin_s`: how long before the request's deadline a call is given up (negative: how long
        after it; the gateway waits a little past it for dialogue, whose answer is due at the deadline)."""
        self.name = name
        self.read_timeout_s = read_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.deadline_margin_s = deadline_margin_s
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        # The internal services' credential (supportbot.service_auth) goes with every call, readiness included.
        headers = {SERVICE_TOKEN_HEADER: service_token} if service_token else None
        self.client = httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, transport=transport,
                                        headers=headers)

    async def aclose(self) -> None:
        await self.client.aclose()

    def time_limits(self, time_limit_s: float | None = None) -> tuple[float, float] | None:
        """(how long this call may wait, what the downstream is told it has) within the request's deadline and
        `time_limit_s`; None when neither limits it (the client's own timeouts apply)."""
        left = deadline.remaining_s()
        if left is None and time_limit_s is None:
            return None
        wait, told = self.read_timeout_s, float("inf")
        if left is not None:
            wait, told = min(wait, left - self.deadline_margin_s), left - max(self.deadline_margin_s, 0.0)
        if time_limit_s is not None:
            wait, told = min(wait, time_limit_s), min(told, time_limit_s)
        return wait, min(told, wait)

    async def request(self, method: str, path: str, response_model: type[ResponseT], *,
                      time_limit_s: float | None = None, **kwargs: Any) -> ResponseT:
        """Send a request and parse the JSON answer into `response_model`; `time_limit_s`: at most this long
        (the downstream is told so), besides the request's deadline."""
        limits = self.time_limits(time_limit_s)
        wait_s: float | None = None
        if limits is not None:
            wait_s, told_s = limits
            if wait_s < MIN_CALL_S:
                raise DeadlinePassed(f"{self.name} service not called: no time left before the deadline",
                                     service=self.name)
            kwargs["headers"] = {**(kwargs.get("headers") or {}), deadline.HEADER: deadline.header_value(told_s)}
            kwargs["timeout"] = httpx.Timeout(wait_s, connect=min(self.connect_timeout_s, wait_s))
        try:
            # httpx's timeouts bound each read; this bounds the whole call (and any transport, in-process too).
            async with asyncio.timeout(wait_s):
                response = await self.client.request(method, path, **kwargs)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise DownstreamTimeout(f"{self.name} service did not answer in time", service=self.name) from exc
        except httpx.TransportError as exc:
            raise DownstreamError(f"{self.name} service is unavailable", service=self.name) from exc
        if response.status_code >= 500:
            error = _error_of(response)
            retry_after = retry_after_s(response)
            # A downstream that reports *its* downstream down: keep the root cause for the caller.
            if error.get("type") == DownstreamTimeout.error_type:
                raise DownstreamTimeout(error.get("message", ""), service=error.get("service") or self.name)
            if error.get("type") == DownstreamError.error_type:
                raise DownstreamError(error.get("message", ""), service=error.get("service") or self.name,
                                      retry_after_s=retry_after)
            if response.status_code == 503 and isinstance(error.get("type"), str) and error.get("message"):
                # It cannot serve now and said why (its database, say): pass that on, with its Retry-After.
                raise DownstreamError(str(error["message"]), error_type=str(error["type"]),
                                      service=error.get("service") or self.name, retry_after_s=retry_after)
            raise DownstreamError(f"{self.name} service failed ({response.status_code})", service=self.name,
                                  retry_after_s=retry_after)
        if response.status_code >= 400:
            error = _error_of(response)
            raise DownstreamRejected(response.status_code, error.get("type", "bad_request"),
                                     error.get("message", response.reason_phrase),
                                     field=error.get("field"), service=self.name,
                                     retry_after_s=retry_after_s(response))
        try:
            return response_model.model_validate_json(response.content)
        except ValidationError as exc:
            raise DownstreamError(f"{self.name} service sent an invalid response", service=self.name) from exc

    async def post(self, path: str, payload: BaseModel, response_model: type[ResponseT], *,
                   time_limit_s: float | None = None) -> ResponseT:
        return await self.request("POST", path, response_model, content=payload.model_dump_json(),
                                  headers={"content-type": "application/json"}, time_limit_s=time_limit_s)

    async def get(self, path: str, response_model: type[ResponseT], **params: Any) -> ResponseT:
        return await self.request("GET", path, response_model, params=params)

    async def readiness(self) -> Health:
        """The downstream's `/readyz` when it is ready (ok or degraded); raises when it is not."""
        try:
            response = await self.client.get("/readyz", timeout=DOWNSTREAM_READY_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise DownstreamError(f"{self.name} service is unavailable", service=self.name) from exc
        if response.status_code != 200:
            raise DownstreamError(f"{self.name} service is not ready", service=self.name)
        try:
            return Health.model_validate_json(response.content)
        except ValidationError as exc:
            raise DownstreamError(f"{self.name} service sent an invalid readiness answer", service=self.name) from exc


def service_client(name: str, base_url: str, settings: CommonSettings,
                   transport: httpx.AsyncBaseTransport | None = None, *,
                   deadline_margin_s: float = DEADLINE_MARGIN_S) -> ServiceClient:
    """A traced client for one downstream, with the timeouts and the service token from `settings`."""
    client = ServiceClient(name, base_url, connect_timeout_s=settings.downstream_connect_timeout_s,
                           read_timeout_s=settings.downstream_read_timeout_s, transport=transport,
                           deadline_margin_s=deadline_margin_s,
                           service_token=settings.service_token.get_secret_value() if settings.service_token else None)
    instrument_client(client.client)
    return client


def retry_after_s(response: httpx.Response) -> int | None:
    """A response's `Retry-After` in whole seconds (either form: seconds or an HTTP date); None if absent or bad."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, math.ceil((when - datetime.now(UTC)).total_seconds()))


def _error_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}
