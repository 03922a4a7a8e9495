"""Pooled HTTP clients for calling another supportbot service.

One `ServiceClient` per downstream, built once in a lifespan, with explicit connect/read timeouts.
Failures become `DownstreamError` (503) or `DownstreamTimeout` (504) naming the service; a 4xx from the
downstream is passed on with its own status and message, and a 503 with its type, message and `Retry-After`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from supportbot.errors import DownstreamError, DownstreamTimeout, SupportbotError
from supportbot.health import DOWNSTREAM_READY_TIMEOUT_S, Health
from supportbot.service_auth import HEADER as SERVICE_TOKEN_HEADER
from supportbot.settings import CommonSettings
from supportbot.telemetry import instrument_client

ResponseT = TypeVar("ResponseT", bound=BaseModel)


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
        service_token: str | None = None,
    ) -> None:
        self.name = name
        timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s, pool=connect_timeout_s)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        # The internal services' credential (supportbot.service_auth) goes with every call, readiness included.
        headers = {SERVICE_TOKEN_HEADER: service_token} if service_token else None
        self.client = httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, transport=transport,
                                        headers=headers)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def request(self, method: str, path: str, response_model: type[ResponseT], **kwargs: Any) -> ResponseT:
        """Send a request and parse the JSON answer into `response_model`."""
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
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

    async def post(self, path: str, payload: BaseModel, response_model: type[ResponseT]) -> ResponseT:
        return await self.request("POST", path, response_model, content=payload.model_dump_json(),
                                  headers={"content-type": "application/json"})

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
                   transport: httpx.AsyncBaseTransport | None = None) -> ServiceClient:
    """A traced client for one downstream, with the timeouts and the service token from `settings`."""
    client = ServiceClient(name, base_url, connect_timeout_s=settings.downstream_connect_timeout_s,
                           read_timeout_s=settings.downstream_read_timeout_s, transport=transport,
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
