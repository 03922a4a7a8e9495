"""The four services as real processes on free ports: `supportbot up`, a conversation, outages, shutdown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.nlp.classifier import load_or_train_default
from tests.helpers import free_port_block, spawn, wait_until_ready

pytestmark = pytest.mark.e2e
API_KEY = "sb_e2e_key_abcdefghijklmnop"


def log_lines(path: Path) -> list[dict[str, object]]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"}}
    return {**env, "SUPPORTBOT_DATA_DIR": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture
def system(tmp_path: Path, model_cache_dir: Path) -> Iterator[tuple[int, subprocess.Popen[bytes], Path]]:
    """`supportbot up --base-port N` on the embedded defaults (SQLite, in-process cache, offline LLM).

    The default intent model is the session's, copied to where the nlp service caches it: training it at
    first start takes 60 to 90 s on two cores, which is the start-up path's own test
    (tests/nlp/test_analyzers.py), not this one's.
    """
    load_or_train_default(model_cache_dir)
    for cached in model_cache_dir.glob("default-*"):
        if ".tmp-" not in cached.name:
            shutil.copytree(cached, tmp_path / "state" / "models" / cached.name)
    base = free_port_block(4)
    log_path = tmp_path / "up.log"
    env = clean_env(tmp_path, SUPPORTBOT_BOOTSTRAP_API_KEY=API_KEY)
    process = subprocess.Popen(
        ["supportbot", "up", "--base-port", str(base)], env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    ) if _on_path("supportbot") else spawn(["up", "--base-port", str(base)], env, log_path)
    try:
        for offset in range(4):
            wait_until_ready(f"http://127.0.0.1:{base + offset}/readyz", 120, process, log_path)
        yield base, process, log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _on_path(name: str) -> bool:
    return any((Path(p) / name).exists() for p in os.environ.get("PATH", "").split(os.pathsep))


def test_conversation_through_the_gateway(system: tuple[int, subprocess.Popen[bytes], Path]) -> None:
    base, process, log_path = system
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{base}", timeout=30) as client:
        assert client.post("/v1/conversations").status_code == 401
        conversation_id = client.post("/v1/conversations", headers=auth).json()["id"]
        greeting = client.post(f"/v1/conversations/{conversation_id}/messages", headers=auth,
                               json={"text": "Hi!"}).json()
        answer = client.post(f"/v1/conversations/{conversation_id}/messages", headers=auth,
                             json={"text": "How can I return an item?"}).json()
        ja = client.post(f"/v1/conversations/{conversation_id}/messages", headers=auth,
                         json={"text": "こんにちは"}).json()
        human = client.post(f"/v1/conversations/{conversation_id}/messages", headers=auth,
                            json={"text": "I want to talk to a real person"}).json()
        transcript = client.get(f"/v1/conversations/{conversation_id}/messages", headers=auth).json()
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        client.post(f"/v1/conversations/{conversation_id}/messages", json={"text": "thanks"},
                    headers={**auth, "traceparent": traceparent})

    assert greeting["intent"]["name"] == "greeting" and greeting["handoff"] is False
    assert answer["provider"] == "offline" and "offline" in answer["reply"]["text"].lower()
    assert answer["sources"]
    assert ja["reply"]["language"] == "ja"
    assert human["handoff"] is True
    assert [m["role"] for m in transcript["messages"]] == ["customer", "bot"] * 4
    assert transcript["messages"][2]["text"] == "How can I return an item?"

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    for offset in range(4):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{base + offset}/healthz", timeout=2)

    # (Read after shutdown: a service writes its access line once the response has gone out.)
    # One trace id, from the caller's traceparent, in the logs of all services that handled the turn.
    services = {line.get("service", {}).get("name") for line in log_lines(log_path)  # type: ignore[union-attr]
                if line.get("trace", {}).get("id") == "0af7651916cd43dd8448eb211c80319c"}  # type: ignore[union-attr]
    assert {"gateway", "dialogue", "nlp"} <= services
    # Customer text never reaches the logs.
    assert "How can I return an item?" not in log_path.read_text()


def test_down_downstream_gives_a_clear_503(tmp_path: Path, request: pytest.FixtureRequest,
                                           model_cache_dir: Path) -> None:
    """Services started one by one (on PostgreSQL when it is there); then nlp (degraded answers) and dialogue
    (the gateway's 503) are stopped. nlp starts from the session's default model, as in `system`."""
    load_or_train_default(model_cache_dir)
    for cached in model_cache_dir.glob("default-*"):
        if ".tmp-" not in cached.name:
            shutil.copytree(cached, tmp_path / "state" / "models" / cached.name)
    base = free_port_block(4)
    database_url = request.getfixturevalue("postgres_url") if _postgres_ok(request) else None
    env = clean_env(tmp_path, SUPPORTBOT_BOOTSTRAP_API_KEY=API_KEY,
                    NLP_URL=f"http://127.0.0.1:{base + 1}", DIALOGUE_URL=f"http://127.0.0.1:{base + 2}",
                    LLM_URL=f"http://127.0.0.1:{base + 3}", **({"DATABASE_URL": database_url} if database_url else {}))
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, offset in (("nlp", 1), ("llm", 3), ("dialogue", 2), ("gateway", 0)):
            processes[name] = spawn(["serve", name, "--port", str(base + offset)], env, tmp_path / f"{name}.log")
        for name, offset in (("nlp", 1), ("llm", 3), ("dialogue", 2), ("gateway", 0)):
            wait_until_ready(f"http://127.0.0.1:{base + offset}/readyz", 120, processes[name],
                             tmp_path / f"{name}.log")
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{base}", timeout=30) as client:
            conversation_id = client.post("/v1/conversations", headers=auth).json()["id"]
            assert client.post(f"/v1/conversations/{conversation_id}/messages", headers=auth,
                               json={"text": "hello"}).status_code == 200

            processes["nlp"].terminate()
            processes["nlp"].wait(timeout=30)
            # Without nlp the turn is still answered, marked degraded; dialogue's readiness says why.
            no_nlp = client.post(f"/v1/conversations/{conversation_id}/messages", headers=auth,
                                 json={"text": "where is my order?"})
            assert no_nlp.status_code == 200, no_nlp.text
            assert no_nlp.json()["degraded_reasons"] == ["nlp_unavailable"] and no_nlp.json()["reply"]["text"]
            dialogue_ready = httpx.get(f"http://127.0.0.1:{base + 2}/readyz", timeout=5)
            assert dialogue_ready.status_code == 200 and dialogue_ready.json()["status"] == "degraded"
            assert dialogue_ready.json()["checks"]["nlp"] != "ok"
            transcript = client.get(f"/v1/conversations/{conversation_id}/messages", headers=auth).json()
            assert [m["role"] for m in transcript["messages"]] == ["customer", "bot", "customer", "bot"]

            processes["dialogue"].terminate()
            processes["dialogue"].wait(timeout=30)
            no_dialogue = client.post(f"/v1/conversations/{conversation_id}/messages", headers=auth,
                                      json={"text": "hello?"})
            assert no_dialogue.status_code == 503
            assert no_dialogue.json()["error"]["service"] == "dialogue"
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


def _postgres_ok(request: pytest.FixtureRequest) -> bool:
    try:
        request.getfixturevalue("postgres_server")
        return True
    except pytest.skip.Exception:
        return False
