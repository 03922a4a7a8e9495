"""nlp validates what its callers send: bad input is a 422 naming the field, never a 500. It keeps no tenants
table (dialogue, its only caller, checks that a tenant exists): `tenant_id` only picks a model directory, so it
must be a slug, never a path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.nlp.app import create_app
from supportbot.settings import NlpSettings
from tests.helpers import SERVICE_HEADERS
from tests.stack import running

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def client(model_cache_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(NlpSettings(data_dir=model_cache_dir))
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://nlp",
                                               headers=SERVICE_HEADERS) as c:
        yield c


BAD: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/analyze", {"text": "where is\u0000 my order"}, "text"),
    ("/v1/analyze", {"text": "broken \udc00"}, "text"),
    ("/v1/analyze", {"text": "   \n"}, "text"),
    ("/v1/analyze", {"text": ""}, "text"),
    ("/v1/analyze", {"text": "x" * 4001}, "text"),
    ("/v1/analyze", {"text": "hello", "tenant_id": "../../etc"}, "tenant_id"),
    ("/v1/analyze", {"text": "hello", "tenant_id": "acme\u0000"}, "tenant_id"),
    ("/v1/analyze", {"text": "hello", "extra": 1}, "extra"),
    ("/v1/redact", {"text": "mail\u0000me"}, "text"),
    ("/v1/redact", {"text": "x" * 32_001}, "text"),
    ("/v1/embed", {"texts": []}, "texts"),
    ("/v1/embed", {"texts": ["ok", "n\u0000l"]}, "texts.1"),
    ("/v1/embed", {"texts": ["\ud800"]}, "texts.0"),
    ("/v1/embed", {"texts": ["x" * 32_001]}, "texts.0"),
    ("/v1/embed", {"texts": ["hi"] * 257}, "texts"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD, ids=[f"{p} {f} {i}" for i, (p, _, f) in enumerate(BAD)])
async def test_bad_input_is_a_422_naming_the_field(client: httpx.AsyncClient, path: str, body: dict[str, Any],
                                                   field: str) -> None:
    response = await client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


async def test_an_unknown_tenant_gets_the_default_model(client: httpx.AsyncClient) -> None:
    default = (await client.post("/v1/analyze", json={"text": "where is my order?"})).json()
    unknown = (await client.post("/v1/analyze", json={"text": "where is my order?", "tenant_id": "nobody"})).json()
    assert unknown["model"] == default["model"] and unknown["intent"] == default["intent"]
