"""Which failures are a database outage (503, retry) and which a bug (500); Retry-After on every 503, passed on
by the gateway from the service behind it; SQLite that cannot be opened any more."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway.app import create_app as create_gateway
from services.dialogue.app import create_app as create_dialogue
from supportbot.db import is_outage, make_async_engine
from supportbot.errors import DownstreamError
from supportbot.http import ServiceClient, retry_after_s
from supportbot.settings import DialogueSettings, GatewaySettings
from tests.helpers import SERVICE_HEADERS, add_tenants, free_port
from tests.stack import API_KEY, running

pytestmark = pytest.mark.anyio


async def _error_of(engine_url: str, statement: str, *, remove: Path | None = None) -> BaseException:
    engine = make_async_engine(engine_url)
    if remove is not None:
        shutil.rmtree(remove)  # after the engine made it: the file cannot be opened any more
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    except Exception as exc:  # noqa: BLE001 - the error is what the test is about
        return exc
    finally:
        await engine.dispose()
    raise AssertionError("the statement did not fail")


async def test_outages_are_told_from_bad_queries(tmp_path: Path, postgres_url: str) -> None:
    cannot_open = await _error_of(f"sqlite:///{tmp_path / 'gone' / 'x.db'}", "SELECT 1", remove=tmp_path / "gone")
    assert isinstance(cannot_open, OperationalError) and is_outage(cannot_open)
    no_table = await _error_of(f"sqlite:///{tmp_path / 'ok.db'}", "SELECT * FROM nowhere")
    assert isinstance(no_table, OperationalError) and not is_outage(no_table), "a bug, not an outage"
    refused = await _error_of(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test", "SELECT 1")
    assert isinstance(refused, OperationalError) and is_outage(refused)
    pg_no_table = await _error_of(postgres_url, "SELECT * FROM nowhere")
    assert isinstance(pg_no_table, ProgrammingError) and not is_outage(pg_no_table)
    assert is_outage(PoolTimeout("QueuePool limit reached"))
    assert not is_outage(IntegrityError("INSERT", {}, Exception("duplicate")))
    assert not is_outage(OSError("a file of our own"))  # not raised by a database driver


def test_retry_after_in_seconds_or_as_a_date() -> None:
    def response(value: str | None) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value} if value is not None else {})

    assert retry_after_s(response("7")) == 7
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 28 <= (retry_after_s(response(later)) or 0) <= 31
    assert retry_after_s(response(None)) is None
    assert retry_after_s(response("soon")) is None


async def test_the_gateway_passes_a_downstream_503_on_with_its_retry_after(data_dir: Path) -> None:
    def dialogue(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": "17"}, json={"error": {
            "type": "database_unavailable", "message": "the database is unavailable; retry shortly"}})

    settings = GatewaySettings(database_url=f"sqlite:///{data_dir / 'gw.db'}", bootstrap_api_key=API_KEY)
    app = create_gateway(settings, transports={"dialogue": httpx.MockTransport(dialogue)})
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        response = await client.post("/v1/conversations", headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "17"
    assert response.json()["error"] == {"type": "database_unavailable", "service": "dialogue",
                                        "message": "the database is unavailable; retry shortly"}


class Health(BaseModel):
    status: str


async def test_every_downstream_503_has_a_retry_after_even_when_the_downstream_gave_none() -> None:
    client = ServiceClient("llm", "http://llm", transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    with pytest.raises(DownstreamError) as caught:
        await client.get("/x", Health)
    assert caught.value.status_code == 503 and caught.value.retry_after_s


async def test_sqlite_that_cannot_be_opened_any_more_is_a_503(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    settings = DialogueSettings(database_url=f"sqlite:///{folder / 'supportbot.db'}", data_dir=tmp_path / "data",
                                nlp_url=f"http://127.0.0.1:{free_port()}", llm_url=f"http://127.0.0.1:{free_port()}")
    app = create_dialogue(settings)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d",
                                               headers=SERVICE_HEADERS) as client:
        await add_tenants(settings.resolved_database_url, "demo")
        body = {"tenant_id": "demo", "channel": "api"}
        assert (await client.post("/v1/conversations", json=body)).status_code == 201
        shutil.rmtree(folder)  # the volume went away
        refused = await client.post("/v1/conversations", json=body)
        ready = await client.get("/readyz")
    assert refused.status_code == 503, refused.text
    assert re.fullmatch(r"\d+", refused.headers["Retry-After"])
    assert refused.json()["error"]["type"] == "database_unavailable"
    assert ready.status_code == 503 and ready.headers["Retry-After"]
