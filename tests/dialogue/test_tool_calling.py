"""OpenAI function calling from the dialogue: the model picks a tool, dialogue runs it, the model answers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from tests.dialogue.conftest import OrderApi
from tests.fake_openai import ServerThread
from tests.stack import in_process_stack

pytestmark = pytest.mark.anyio


class ToolCallingModel:
    """An OpenAI-compatible model that calls `order_lookup` when offered, then answers from the result."""

    def __init__(self, arguments: dict[str, Any]) -> None:
        self.arguments = arguments
        self.requests: list[dict[str, Any]] = []

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> dict[str, Any]:
            body = await request.json()
            self.requests.append(body)
            last = body["messages"][-1]
            if body.get("tools") and last["role"] != "tool":
                message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "order_lookup", "arguments": json.dumps(self.arguments)}}]}
            else:
                result = json.loads(last["content"]) if last["role"] == "tool" else {}
                message = {"role": "assistant", "content": f"Your order is {result.get('status', 'unknown')}."}
            return {"id": "x", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}}

        return app


def tools_only_config(data_dir: Path) -> None:
    """A tenant whose order lookups go through the LLM's function calling instead of a flow."""
    flows = (Path(__file__).resolve().parents[2] / "supportbot/data/flows/default.yaml").read_text()
    flows = flows[:flows.index("flows:")] + "flows: {}\n"
    (data_dir / "tenants" / "demo").mkdir(parents=True)
    (data_dir / "tenants" / "demo" / "flows.yaml").write_text(flows.replace("timeout_s: 3", "timeout_s: 0.5"))


@pytest.mark.parametrize(("fault", "arguments", "expected"), [
    (None, {"order_number": "ORD-48213"}, "Your order is shipped."),
    ("500", {"order_number": "ORD-48213"}, None),
    ("slow", {"order_number": "ORD-48213"}, None),
    (None, {"order_number": "../../etc/passwd"}, None),  # arguments that break the tool's JSON schema
])
async def test_three_step_tool_call(fault: str | None, arguments: dict[str, Any], expected: str | None,
                                    sqlite_url: str, data_dir: Path, model_cache_dir: Path,
                                    order_api: OrderApi) -> None:
    order_api.fault = fault
    tools_only_config(data_dir)
    model = ToolCallingModel(arguments)
    with ServerThread(model.app()) as server:
        async with in_process_stack(database_url=sqlite_url, data_dir=data_dir, model_dir=model_cache_dir,
                                    openai_base_url=f"http://127.0.0.1:{server.port}/v1",
                                    openai_api_key="sk-test") as stack:
            conversation_id = (await stack.client.post("/v1/conversations", headers=stack.auth)).json()["id"]
            reply = (await stack.client.post(f"/v1/conversations/{conversation_id}/messages", headers=stack.auth,
                                             json={"text": "Where is my order ORD-48213?"})).json()
    offered = model.requests[0]["tools"]
    assert [t["function"]["name"] for t in offered] == ["order_lookup"]
    if expected:
        assert reply["reply"]["text"] == expected
        assert order_api.calls == ["ORD-48213"]
        tool_message = model.requests[1]["messages"][-1]
        assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_1"
        assert json.loads(tool_message["content"])["status"] == "shipped"
    else:
        text = reply["reply"]["text"].lower()
        assert "sorry" in text and "person" in text and "shipped" not in text
        assert len(model.requests) == 1, "a failed tool is not handed back to the model to improvise on"
