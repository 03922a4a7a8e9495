"""`/healthz` (the process is alive) and `/readyz` (it can serve, and how well).

A service declares on `app.state`:

- `readiness_checks`: name → async callable that raises when that dependency fails. Any failure: 503
  `unavailable` (the service cannot serve: its database, say).
- `optional_checks`: the same for dependencies it can do without. A failure: 200 `degraded`, naming them
  in `degraded` (Redis, or nlp and llm for dialogue, which then answers degraded).
- `preparation`: an object with `status() -> Progress | None`, while models are being prepared. A
  `Progress` that is not done: 503 `preparing` with the step and the fraction done; one that failed: 503
  `failed` with its error.

A check may return a `Health` of its own (a downstream's readiness): its `degraded` status makes this
service degraded too, with the downstream's reasons prefixed by its name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[object]]
Status = Literal["ok", "degraded", "unavailable", "preparing", "failed"]
CHECK_TIMEOUT_S = 4.0  # per check; a downstream's /readyz runs its own checks within less
DOWNSTREAM_READY_TIMEOUT_S = 3.5


class Progress(BaseModel):
    """Where model preparation stands."""

    step: str
    fraction: float  # of the whole preparation, 0..1
    done: bool = False
    error: str | None = None


class Health(BaseModel):
    status: Status
    service: str
    checks: dict[str, str] = {}
    degraded: list[str] = []
    progress: Progress | None = None


class Preparation(Protocol):
    def status(self) -> Progress | None: ...


async def _run(check: ReadinessCheck) -> tuple[str, list[str]]:
    """("ok" or the failure, the degraded reasons a downstream's own Health reported)."""
    try:
        result = await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure means that dependency is not there
        return f"failed: {type(exc).__name__}", []
    if isinstance(result, Health) and result.status == "degraded":
        return "degraded", result.degraded
    return "ok", []


async def readiness(app: object) -> tuple[int, Health]:
    """The HTTP status and body of `/readyz` for `app`."""
    state = app.state  # type: ignore[attr-defined]
    name = state.service_name
    preparation: Preparation | None = getattr(state, "preparation", None)
    progress = preparation.status() if preparation is not None else None
    if progress is not None and not progress.done:
        status: Status = "failed" if progress.error else "preparing"
        return 503, Health(status=status, service=name, progress=progress)
    required: dict[str, ReadinessCheck] = getattr(state, "readiness_checks", {})
    optional: dict[str, ReadinessCheck] = getattr(state, "optional_checks", {})
    names = [*required, *optional]
    outcomes = await asyncio.gather(*(_run(check) for check in [*required.values(), *optional.values()]))
    checks = {key: outcome[0] for key, outcome in zip(names, outcomes, strict=True)}
    degraded: list[str] = []
    for key, (result, reasons) in zip(names, outcomes, strict=True):
        if result == "degraded":
            degraded.extend(f"{key}.{reason}" for reason in reasons)
        elif result != "ok" and key in optional:
            degraded.append(key)
    if any(checks[key] not in ("ok", "degraded") for key in required):
        return 503, Health(status="unavailable", service=name, checks=checks, degraded=degraded)
    return 200, Health(status="degraded" if degraded else "ok", service=name, checks=checks, degraded=degraded)


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", response_model=Health)
    async def healthz(request: Request) -> Health:
        return Health(status="ok", service=request.app.state.service_name)

    @router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    async def readyz(request: Request) -> JSONResponse:
        code, body = await readiness(request.app)
        headers = {"Retry-After": "5"} if code == 503 else None
        return JSONResponse(status_code=code, content=body.model_dump(exclude_none=True), headers=headers)

    return router
