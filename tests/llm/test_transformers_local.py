"""The in-process transformers backend, on CPU with a tiny model built here (CUDA variant skips without a GPU)."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
