"""The nlp service's HTTP contract, including bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.nlp.app import create_app
from supportbot.settings import NlpSettings
from tests.stack import running

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(model_cache_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(NlpSettings(data_dir=model_cache_dir))
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nlp") as c:
        yield c


async def test_analyze_returns_every_signal(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/analyze", json={"text": "Where is my order ORD-12345? I'm so angry!!"})
    assert response.status_code == 200
    body = response.json()
    assert body["intent"]["name"] == "order_status"
    assert 0 < body["intent"]["confidence"] <= 1
    assert body["language"] == "en"
    assert body["sentiment"]["label"] == "negative"
    assert {"type": "order_number", "value": "ORD-12345", "start": 18, "end": 27,
            "normalized": "ORD12345"} in body["entities"]
    assert body["model"] == "default"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"json": {"text": ""}}, "text"),
    ({"json": {"text": "x" * 4001}}, "text"),
    ({"json": {"text": ["a", "list"]}}, "text"),
    ({"json": {}}, "text"),
    ({"json": {"text": "hi", "tenant_id": "Bad Tenant"}}, "tenant_id"),
])
async def test_bad_input_is_a_clear_422(client: httpx.AsyncClient, kwargs: dict[str, object], field: str) -> None:
    response = await client.post("/v1/analyze", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "validation_error" and field in error["message"]
    assert error["field"] == field


@pytest.mark.parametrize(("content", "content_type", "status", "error_type"), [
    (b"\x00\x01\xff\xfe binary", "application/json", 400, "bad_request"),
    (b"text=hi", "application/x-www-form-urlencoded", 422, "validation_error"),
])
async def test_body_that_is_not_json_is_a_clear_4xx(client: httpx.AsyncClient, content: bytes, content_type: str,
                                                    status: int, error_type: str) -> None:
    response = await client.post("/v1/analyze", content=content, headers={"content-type": content_type})
    assert response.status_code == status
    assert response.json()["error"]["type"] == error_type


async def test_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    assert (await client.get("/readyz")).status_code == 200
