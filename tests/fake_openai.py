"""An OpenAI-compatible chat-completions server on loopback, with faults the test can switch on."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from tests.helpers import free_port

FAULTS = ("500", "429", "timeout", "garbage", "stream_cut", "stream_fail_first")


@dataclass
class FakeOpenAI:
    """Set `fault` to None or one of `FAULTS`; `fault_times` limits it to the first N calls (None: all).

    - 500 / 429 (with `Retry-After: retry_after`) / timeout (sleeps 30 s) / garbage (a 200 that is not JSON);
    - stream_cut: a stream sends `cut_after` chunks, then the connection drops;
    - stream_fail_first: a stream's connection drops before its first chunk.
    Streams send a final usage chunk when the request asks for `stream_options.include_usage` and
    `stream_usage` is true. Read `calls`, `call_times` and `requests`.
    """

    fault: str | None = None
    fault_times: int | None = None
    retry_after: str = "0"
    reply: str = "Standard shipping takes 3 to 5 business days."
    prompt_tokens: int = 57
    completion_tokens: int = 11
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    cut_after: int = 2
    stream_usage: bool = True
    model_name: str | None = None
    calls: int = 0
    call_times: list[float] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _fault_now(self) -> str | None:
        if self.fault is None:
            return None
        if self.fault_times is not None and self.calls > self.fault_times:
            return None
        return self.fault

    def pieces(self) -> list[str]:
        words = self.reply.split(" ")
        return [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words)]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> Any:
            self.calls += 1
            self.call_times.append(time.monotonic())
            body = await request.json()
            self.requests.append(body)
            fault = self._fault_now()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if fault == "500":
                return JSONResponse({"error": {"message": "upstream exploded", "type": "server_error"}}, 500)
            if fault == "429":
                return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}}, 429,
                                    headers={"Retry-After": self.retry_after})
            if fault == "timeout":
                await asyncio.sleep(30)
            if fault == "garbage":
                return PlainTextResponse("<html>definitely not json", 200)
            model = self.model_name or body.get("model", "gpt-test")
            if body.get("stream"):
                usage = bool((body.get("stream_options") or {}).get("include_usage")) and self.stream_usage
                return StreamingResponse(self._stream(model, fault, usage), media_type="text/event-stream")
            return {
                "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": self.reply}}],
                "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                          "total_tokens": self.prompt_tokens + self.completion_tokens},
            }

        return app

    async def _stream(self, model: str, fault: str | None, usage: bool) -> AsyncIterator[bytes]:
        def event(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> bytes:
            chunk = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": model, "choices": choices, **(extra or {})}
            return f"data: {json.dumps(chunk)}\n\n".encode()

        if fault == "stream_fail_first":
            raise ConnectionResetError("dropped before the first token")
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i, piece in enumerate(self.pieces()):
            if fault == "stream_cut" and i == self.cut_after:
                raise ConnectionResetError("dropped mid-stream")
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if usage:
            yield event([], {"usage": {"prompt_tokens": self.prompt_tokens,
                                       "completion_tokens": self.completion_tokens,
                                       "total_tokens": self.prompt_tokens + self.completion_tokens}})
        yield b"data: [DONE]\n\n"


class ServerThread:
    """Runs an ASGI app with uvicorn in a background thread on a free loopback port."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical", lifespan="off")
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
