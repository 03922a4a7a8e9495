"""An OpenAI-compatible chat-completions server on loopback, with faults the test can switch on."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from tests.helpers import free_port


@dataclass
class FakeOpenAI:
    """Set `fault` to None, "500", "429", "timeout" or "garbage"; read `calls` and `requests`."""

    fault: str | None = None
    reply: str = "Standard shipping takes 3 to 5 business days."
    prompt_tokens: int = 57
    completion_tokens: int = 11
    delay_s: float = 0.0
    calls: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> Any:
            self.calls += 1
            body = await request.json()
            self.requests.append(body)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fault == "500":
                return JSONResponse({"error": {"message": "upstream exploded", "type": "server_error"}}, 500)
            if self.fault == "429":
                return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, 429,
                                    headers={"Retry-After": "0"})
            if self.fault == "timeout":
                await asyncio.sleep(30)
            if self.fault == "garbage":
                return PlainTextResponse("<html>definitely not json", 200)
            return {
                "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "gpt-test"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.reply}}],
                "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                          "total_tokens": self.prompt_tokens + self.completion_tokens},
            }

        return app


class ServerThread:
    """Runs an ASGI app with uvicorn in a background thread on a free loopback port."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
