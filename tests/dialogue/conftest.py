"""Shared by the dialogue tests: the tenant's order system on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tests.fake_openai import ServerThread


class OrderApi:
    """The tenant's order system, on loopback; `fault` is None, "500" or "slow"."""

    def __init__(self) -> None:
        self.fault: str | None = None
        self.calls: list[str] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/orders/{number}")
        def order(number: str) -> Any:
            self.calls.append(number)
            if self.fault == "500":
                return JSONResponse({"detail": "db down"}, 500)
            if self.fault == "slow":
                time.sleep(5)
            if number.upper().replace("ORD-", "").replace("ORD", "") == "48213":
                return {"status": "shipped", "estimated_delivery": "2026-11-28"}
            return JSONResponse({"detail": "no such order"}, 404)

        return app


@pytest.fixture
def order_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[OrderApi]:
    api = OrderApi()
    with ServerThread(api.app()) as server:
        monkeypatch.setenv("ORDER_API_URL", f"http://127.0.0.1:{server.port}")
        yield api
