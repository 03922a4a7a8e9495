"""The four services in one process, wired through ASGI transports (no sockets), with real storage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from gateway.app import create_app as create_gateway
from services.dialogue.app import create_app as create_dialogue
from services.llm.app import create_app as create_llm
from services.nlp.app import create_app as create_nlp
from supportbot.settings import DialogueSettings, GatewaySettings, LlmSettings, NlpSettings

API_KEY = "sb_test_key_0123456789abcdef"


@dataclass
class Stack:
    client: httpx.AsyncClient  # talks to the gateway
    apps: dict[str, FastAPI]
    api_key: str = API_KEY

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def new_conversation(self) -> str:
        response = await self.client.post("/v1/conversations", headers=self.auth)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def say(self, conversation_id: str, text: str, **extra: Any) -> dict[str, Any]:
        """Send a customer message through the gateway; asserts it was answered with 200."""
        response = await self.client.post(f"/v1/conversations/{conversation_id}/messages", headers=self.auth,
                                          json={"text": text, **extra})
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def transcript(self, conversation_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/conversations/{conversation_id}/messages", headers=self.auth)
        return list(response.json()["messages"])


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    async with app.router.lifespan_context(app):
        preparation = getattr(app.state, "preparation", None)
        if preparation is not None:  # nlp loads (or first prepares) its models in the background
            progress = await preparation.wait(timeout_s=900)
            assert progress.done, progress
        yield app


def asgi(app: FastAPI) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=app)


@asynccontextmanager
async def in_process_stack(*, database_url: str, data_dir: Path, model_dir: Path, redis_url: str | None = None,
                           openai_base_url: str | None = None, openai_api_key: str | None = None,
                           redis_key_prefix: str | None = None,
                           gateway_settings: dict[str, Any] | None = None,
                           dialogue_settings: dict[str, Any] | None = None,
                           llm_settings: dict[str, Any] | None = None) -> AsyncIterator[Stack]:
    """`redis_key_prefix`: the test's own (default: REDIS_KEY_PREFIX, which the `redis_prefix` fixture sets);
    `gateway_settings`, `dialogue_settings`, `llm_settings`: more fields of those services' settings (the auth
    cache's times, TRANSCRIPT_KEYS, OPENAI_TIMEOUT_S, say)."""
    common: dict[str, Any] = {"database_url": database_url, "data_dir": data_dir, "redis_url": redis_url}
    if redis_key_prefix is not None:
        common["redis_key_prefix"] = redis_key_prefix
    nlp = create_nlp(NlpSettings(**{**common, "data_dir": model_dir}))
    llm = create_llm(LlmSettings(**{**common, "openai_base_url": openai_base_url, "openai_api_key": openai_api_key,
                                    "openai_max_retries": 0, "openai_timeout_s": 2.0, **(llm_settings or {})}))
    dialogue = create_dialogue(DialogueSettings(**common, **(dialogue_settings or {})),
                               transports={"nlp": asgi(nlp), "llm": asgi(llm)})
    gateway = create_gateway(GatewaySettings(**common, bootstrap_api_key=API_KEY, **(gateway_settings or {})),
                             transports={"dialogue": asgi(dialogue), "llm": asgi(llm)})
    async with AsyncExitStack() as stack:
        for app in (nlp, llm, dialogue, gateway):
            await stack.enter_async_context(running(app))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway")
        stack.push_async_callback(client.aclose)
        yield Stack(client=client, apps={"nlp": nlp, "llm": llm, "dialogue": dialogue, "gateway": gateway})
