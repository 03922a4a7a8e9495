"""The in-process transformers backend, on CPU with a tiny model built here (CUDA variant skips without a GPU)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from services.llm.providers.transformers_local import TransformersProvider  # noqa: E402
from supportbot.contracts.llm import ChatMessage, GenerationContext  # noqa: E402
from tests.tiny_model import build_tiny_model  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def ask(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="You are a support bot."), ChatMessage(role="user", content=text)]


async def test_loads_from_a_directory_and_generates_with_exact_token_counts(tiny_model: Path) -> None:
    provider = TransformersProvider(tiny_model, device="cpu")
    try:
        generation = await provider.generate(ask("Where is my order?"), GenerationContext(), temperature=0.0,
                                             max_tokens=12)
    finally:
        await provider.aclose()
    prompt_ids = provider.tokenizer(provider.render(ask("Where is my order?")), add_special_tokens=False)["input_ids"]
    assert generation.text
    assert generation.prompt_tokens == len(prompt_ids)
    assert 0 < generation.completion_tokens <= 12
    assert generation.model == tiny_model.name and not generation.estimated


async def test_concurrent_requests_are_batched_and_match_sequential_answers(tiny_model: Path) -> None:
    questions = [f"Question number {i}: where is my parcel?" for i in range(8)] + ["短い質問"]
    provider = TransformersProvider(tiny_model, device="cpu", max_batch_size=16, max_wait_ms=50)
    try:
        sequential = [await provider.generate(ask(q), GenerationContext(), temperature=0.0, max_tokens=8)
                      for q in questions]
        calls_before = provider.batcher.batches_run
        batched = await asyncio.gather(*(provider.generate(ask(q), GenerationContext(), temperature=0.0,
                                                           max_tokens=8) for q in questions))
    finally:
        await provider.aclose()
    assert calls_before == len(questions)  # one generate per request when they come one at a time
    assert provider.batcher.batches_run - calls_before < len(questions) / 2
    assert max(provider.batcher.batch_sizes) > 1
    # Left padding must not change a greedy answer: batched equals sequential, token for token.
    assert [g.text for g in batched] == [g.text for g in sequential]
    assert [g.prompt_tokens for g in batched] == [g.prompt_tokens for g in sequential]


async def test_not_a_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        TransformersProvider(tmp_path)


@pytest.mark.gpu
async def test_cuda_bf16(tiny_model: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    provider = TransformersProvider(tiny_model)
    try:
        generation = await provider.generate(ask("hello"), GenerationContext(), temperature=0.0, max_tokens=4)
    finally:
        await provider.aclose()
    assert provider.device == "cuda" and provider.lm.dtype == torch.bfloat16
    assert generation.completion_tokens > 0


async def test_stream_yields_pieces_then_exact_usage(tiny_model: Path) -> None:
    provider = TransformersProvider(tiny_model, device="cpu")
    try:
        whole = await provider.generate(ask("hello"), GenerationContext(), temperature=0.0, max_tokens=8)
        deltas = [d async for d in provider.stream(ask("hello"), GenerationContext(), temperature=0.0, max_tokens=8)]
    finally:
        await provider.aclose()
    assert "".join(d.text for d in deltas) == whole.text
    assert len([d for d in deltas if d.text]) >= 1
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens == whole.completion_tokens


async def test_llm_service_fails_over_to_the_in_process_model(tiny_model: Path, sqlite_url: str, data_dir: Path,
                                                              fake_openai: Any) -> None:
    """LOCAL_LLM_MODEL_PATH puts the model in the chain: when OpenAI fails, it answers, not the offline one."""
    import httpx

    from services.llm.app import create_app
    from supportbot.settings import LlmSettings
    from tests.helpers import SERVICE_HEADERS, add_tenants
    from tests.stack import running

    fake_openai.fault = "500"
    settings = LlmSettings(database_url=sqlite_url, data_dir=data_dir, openai_api_key="sk-test",
                           openai_base_url=fake_openai.base_url, openai_max_retries=0,
                           local_llm_model_path=tiny_model, local_llm_device="cpu")
    app = create_app(settings)
    async with running(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://llm",
                                               headers=SERVICE_HEADERS) as c:
        await add_tenants(sqlite_url, "demo")
        response = await c.post("/v1/generate", json={
            "tenant_id": "demo", "messages": [{"role": "user", "content": "where is my order?"}],
            "temperature": 0, "max_tokens": 6})
    body = response.json()
    assert response.status_code == 200, body
    assert body["provider"] == "transformers" and body["model"] == tiny_model.name
    assert "openai" in body["failover_reason"]
    assert 0 < body["usage"]["completion_tokens"] <= 6
