from __future__ import annotations

import httpx
import pytest
from pydantic import BaseModel

from supportbot.errors import DownstreamError, DownstreamTimeout
from supportbot.http import DownstreamRejected, ServiceClient
from tests.helpers import free_port

pytestmark = pytest.mark.anyio


class Answer(BaseModel):
    value: int


class Ask(BaseModel):
    question: str


def client_for(handler: httpx.MockTransport) -> ServiceClient:
    return ServiceClient("nlp", "http://nlp", transport=handler)


async def test_parses_a_good_answer() -> None:
    client = client_for(httpx.MockTransport(lambda r: httpx.Response(200, json={"value": 3})))
    assert (await client.post("/x", Ask(question="q"), Answer)).value == 3


async def test_server_error_becomes_503_naming_the_service() -> None:
    client = client_for(httpx.MockTransport(lambda r: httpx.Response(500, text="boom")))
    with pytest.raises(DownstreamError) as caught:
        await client.post("/x", Ask(question="q"), Answer)
    assert caught.value.status_code == 503 and caught.value.service == "nlp"


async def test_invalid_body_becomes_503() -> None:
    client = client_for(httpx.MockTransport(lambda r: httpx.Response(200, json={"unexpected": True})))
    with pytest.raises(DownstreamError, match="invalid response"):
        await client.post("/x", Ask(question="q"), Answer)


async def test_timeout_becomes_504() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(DownstreamTimeout) as caught:
        await client_for(httpx.MockTransport(slow)).post("/x", Ask(question="q"), Answer)
    assert caught.value.status_code == 504


async def test_client_error_passes_through_with_its_field() -> None:
    body = {"error": {"type": "not_found", "message": "conversation x not found", "field": "conversation_id"}}
    client = client_for(httpx.MockTransport(lambda r: httpx.Response(404, json=body)))
    with pytest.raises(DownstreamRejected) as caught:
        await client.post("/x", Ask(question="q"), Answer)
    assert (caught.value.status_code, caught.value.field) == (404, "conversation_id")


async def test_nothing_listening_is_503_quickly() -> None:
    client = ServiceClient("llm", f"http://127.0.0.1:{free_port()}", connect_timeout_s=1.0)
    with pytest.raises(DownstreamError) as caught:
        await client.post("/x", Ask(question="q"), Answer)
    assert caught.value.status_code == 503
    await client.aclose()


async def test_root_cause_of_a_chained_outage_is_kept() -> None:
    body = {"error": {"type": "downstream_unavailable", "message": "nlp service is unavailable", "service": "nlp"}}
    client = ServiceClient("dialogue", "http://dialogue",
                           transport=httpx.MockTransport(lambda r: httpx.Response(503, json=body)))
    with pytest.raises(DownstreamError) as caught:
        await client.post("/x", Ask(question="q"), Answer)
    assert (caught.value.service, caught.value.message) == ("nlp", "nlp service is unavailable")
