"""`/healthz` (the process is alive) and `/readyz` (every dependency answers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]


class Health(BaseModel):
    status: str
    service: str
    checks: dict[str, str] = {}


def health_router() -> APIRouter:
    """Probes that read their checks from `app.state.readiness_checks` (name → async callable)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", response_model=Health)
    async def healthz(request: Request) -> Health:
        return Health(status="ok", service=request.app.state.service_name)

    @router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
    async def readyz(request: Request) -> JSONResponse:
        checks: dict[str, ReadinessCheck] = getattr(request.app.state, "readiness_checks", {})
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout=2.0)
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                results[name] = f"failed: {type(exc).__name__}"
        ready = all(value == "ok" for value in results.values())
        body = Health(status="ok" if ready else "unavailable", service=request.app.state.service_name,
                      checks=results)
        return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())

    return router
