"""The internal services' credential: nlp, dialogue and llm answer only callers with SERVICE_TOKEN, on every
route but the probes; they refuse to start without a real one; the gateway, `supportbot up` and ServiceClient
play their parts."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from starlette.routing import Route
from pydantic import ValidationError

from gateway.app import create_app as create_gateway
from services.dialogue.app import create_app as create_dialogue
from services.llm.app import create_app as create_llm
from services.nlp.app import create_app as create_nlp
from supportbot import service_auth
from supportbot.http import service_client
from supportbot.runner import service_env
from supportbot.service_auth import HEADER, ServiceTokenMiddleware, ServiceTokenMissing
from supportbot.settings import DialogueSettings, GatewaySettings, LlmSettings, NlpSettings
from tests.helpers import REPO, SERVICE_HEADERS, SERVICE_TOKEN, add_tenants, free_port
from tests.stack import running

pytestmark = pytest.mark.anyio
PROBES = {"/healthz", "/readyz"}


def build(name: str, tmp_path: Path) -> FastAPI:
    common: dict[str, Any] = {"database_url": f"sqlite:///{tmp_path / 'supportbot.db'}", "data_dir": tmp_path,
                              "redis_url": None}
    if name == "nlp":
        return create_nlp(NlpSettings(**common))
    if name == "dialogue":
        return create_dialogue(DialogueSettings(**common, nlp_url=f"http://127.0.0.1:{free_port()}",
                                                llm_url=f"http://127.0.0.1:{free_port()}"))
    return create_llm(LlmSettings(**common))


def every_request(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, path parameters filled in: its API routes (all in its
    OpenAPI schema) and the schema and docs pages themselves."""
    requests = [(method.upper(), re.sub(r"\{[^}]+\}", "conv_12345678", path))
                for path, operations in app.openapi()["paths"].items() for method in operations]
    requests += [(method, route.path) for route in app.routes if isinstance(route, Route)
                 for method in sorted((route.methods or set()) - {"HEAD"})]
    return requests


@pytest.mark.parametrize("name", ["nlp", "dialogue", "llm"])
async def test_every_route_but_the_probes_is_closed_without_the_token(name: str, tmp_path: Path) -> None:
    app = build(name, tmp_path)
    requests = every_request(app)
    closed = [(method, path) for method, path in requests if path not in PROBES]
    assert {"/docs", "/openapi.json"} <= {path for _, path in closed}
    assert len({path for _, path in closed if path.startswith("/v1/")}) >= 3, closed
    # Not started: a refused call never reaches a route, so nothing behind the door needs to run.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}") as client:
        for method, path in closed:
            for headers in ({}, {HEADER: "x" * len(SERVICE_TOKEN)}, {HEADER: SERVICE_TOKEN[:-1]},
                            {HEADER: SERVICE_TOKEN + "x"}, {HEADER.lower(): ""}):
                response = await client.request(method, path, headers=headers, json={})
                assert response.status_code == 401, (method, path, headers, response.text)
                error = response.json()["error"]
                assert error["type"] == "unauthorized" and error["field"] == HEADER and HEADER in error["message"]
                assert error["service"] == name
                assert response.headers["www-authenticate"] == HEADER
            # The header twice (one right, one wrong) is no credential either.
            twice = await client.request(method, path, headers=[(HEADER, SERVICE_TOKEN), (HEADER, "wrong")])
            assert twice.status_code == 401


@pytest.mark.parametrize("name", ["nlp", "dialogue", "llm"])
async def test_probes_are_open_and_the_token_lets_calls_through(name: str, tmp_path: Path) -> None:
    app = build(name, tmp_path)
    # nlp is not started (its models are tests/nlp's business): its probes answer, whatever they say.
    started = running(app) if name != "nlp" else contextlib.nullcontext()
    async with started, httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                          base_url=f"http://{name}") as client:
        await add_tenants(f"sqlite:///{tmp_path / 'supportbot.db'}", "demo")
        for probe in PROBES:
            status = (await client.get(probe)).status_code
            assert status == 200 if name != "nlp" else status not in (401, 500), (probe, status)
        docs = await client.get("/openapi.json", headers=SERVICE_HEADERS)
        assert docs.status_code == 200 and docs.json()["info"]["title"].endswith(name)
        if name == "nlp":
            answer = await client.post("/v1/redact", json={"text": "mail me at jo@example.com"},
                                       headers=SERVICE_HEADERS)
            assert answer.status_code == 200 and "jo@example.com" not in answer.text
        elif name == "dialogue":
            answer = await client.post("/v1/conversations", json={"tenant_id": "demo"}, headers=SERVICE_HEADERS)
            assert answer.status_code == 201, answer.text
        else:
            answer = await client.post("/v1/generate", headers=SERVICE_HEADERS, json={
                "tenant_id": "demo", "messages": [{"role": "user", "content": "How long does shipping take?"}]})
            assert answer.status_code == 200 and answer.json()["provider"] == "offline", answer.text


async def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = service_auth.hmac.compare_digest

    def spy(shown: bytes, expected: bytes) -> bool:
        compared.append((shown, expected))
        return real(shown, expected)

    monkeypatch.setattr(service_auth.hmac, "compare_digest", spy)

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    door = ServiceTokenMiddleware(ok, token=SERVICE_TOKEN, service="nlp")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=door), base_url="http://nlp") as client:
        assert (await client.get("/v1/x", headers={HEADER: "guess"})).status_code == 401
        assert (await client.get("/v1/x", headers=SERVICE_HEADERS)).status_code == 204
    assert compared == [(b"guess", SERVICE_TOKEN.encode()), (SERVICE_TOKEN.encode(), SERVICE_TOKEN.encode())]


async def test_the_gateway_needs_no_service_token_and_its_clients_send_it(tmp_path: Path) -> None:
    gateway = create_gateway(GatewaySettings(database_url=f"sqlite:///{tmp_path / 'g.db'}", data_dir=tmp_path))
    assert not any(m.cls is ServiceTokenMiddleware for m in gateway.user_middleware)
    for name in ("nlp", "dialogue", "llm"):
        assert any(m.cls is ServiceTokenMiddleware for m in build(name, tmp_path).user_middleware), name
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get(HEADER))
        return httpx.Response(200, json={"status": "ok", "service": "llm"})

    client = service_client("llm", "http://llm", GatewaySettings(), httpx.MockTransport(answer))
    try:
        await client.readiness()
        await client.client.post("/v1/generate", json={})
    finally:
        await client.aclose()
    assert seen == [SERVICE_TOKEN, SERVICE_TOKEN]


@pytest.mark.parametrize("create", [create_nlp, create_dialogue, create_llm], ids=["nlp", "dialogue", "llm"])
def test_an_internal_service_refuses_to_start_without_a_token(create: Any, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.delenv("SERVICE_TOKEN")
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(tmp_path))
    with pytest.raises(ServiceTokenMissing, match=re.escape("secrets.token_urlsafe(32)")):
        create()


def example_secrets() -> dict[str, str]:
    return {key: value for doc in yaml.safe_load_all((REPO / "k8s" / "secret.example.yaml").read_text()) if doc
            for key, value in (doc.get("stringData") or {}).items()}


@pytest.mark.parametrize("value", ["changeme", "change-me-change-me-change-me", "replace-me-with-a-real-token-0",
                                   "CHANGE-ME-generate-one-please-now", "your-secret-here-0123456789",
                                   "a" * 23, "a real token with spaces in it!", "tab\tseparated-token-0123456789",
                                   "example"])
def test_placeholder_or_short_service_tokens_are_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_TOKEN", value)
    for settings in (NlpSettings, DialogueSettings, LlmSettings, GatewaySettings):
        with pytest.raises(ValidationError) as refused:
            settings()
        message = str(refused.value)
        assert "SERVICE_TOKEN" in message and "secrets.token_urlsafe(32)" in message
        assert value not in message  # the refused value is not echoed


def test_the_k8s_example_placeholders_are_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    examples = example_secrets()
    monkeypatch.setenv("SERVICE_TOKEN", examples["SERVICE_TOKEN"])
    with pytest.raises(ValidationError, match="SERVICE_TOKEN"):
        NlpSettings()
    monkeypatch.setenv("SERVICE_TOKEN", SERVICE_TOKEN)
    monkeypatch.setenv("SUPPORTBOT_BOOTSTRAP_API_KEY", examples["SUPPORTBOT_BOOTSTRAP_API_KEY"])
    with pytest.raises(ValidationError, match="SUPPORTBOT_BOOTSTRAP_API_KEY"):
        GatewaySettings()


@pytest.mark.parametrize("value", ["sk-...", "sk-", "changeme", "sk-your-key-here", "sk-REPLACE-ME",
                                   "sk-proj-CHANGE-ME", "<your key here>", "sk-xxxxxxxxxxxxxxxxxxxx"])
def test_placeholder_openai_keys_are_refused(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", value)
    with pytest.raises(ValidationError, match="OPENAI_API_KEY is a placeholder"):
        LlmSettings()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-proj-4kq0W2c9ZpXb7TfLmA1sUeR8yHnJd3Vg")
    assert LlmSettings().openai_api_key is not None


def test_serve_without_a_token_exits_with_how_to_make_one(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "SERVICE_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "supportbot.cli", "serve", "llm", "--port", str(free_port())],
                            env={**env, "SUPPORTBOT_DATA_DIR": str(tmp_path)}, cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("supportbot: llm refuses to start without SERVICE_TOKEN")
    assert "secrets.token_urlsafe(32)" in last and "Traceback" not in result.stderr
    placeholder = subprocess.run([sys.executable, "-m", "supportbot.cli", "serve", "nlp"],
                                 env={**env, "SERVICE_TOKEN": "changeme", "SUPPORTBOT_DATA_DIR": str(tmp_path)},
                                 cwd=REPO, capture_output=True, text=True, timeout=120)
    assert placeholder.returncode == 2 and "Traceback" not in placeholder.stderr
    assert "supportbot: SERVICE_TOKEN: SERVICE_TOKEN must be a real secret" in placeholder.stderr


def test_up_makes_a_token_for_its_children_unless_one_is_set() -> None:
    made = service_env({"PATH": "/bin"}, "127.0.0.1", 8000)
    again = service_env({"PATH": "/bin", "SERVICE_TOKEN": ""}, "127.0.0.1", 8000)
    assert len(made["SERVICE_TOKEN"]) >= 40 and made["SERVICE_TOKEN"] != again["SERVICE_TOKEN"]
    NlpSettings(service_token=made["SERVICE_TOKEN"])  # a token the services accept
    assert service_env({"SERVICE_TOKEN": SERVICE_TOKEN}, "127.0.0.1", 8000)["SERVICE_TOKEN"] == SERVICE_TOKEN
