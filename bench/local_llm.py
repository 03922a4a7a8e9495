"""Throughput of the in-process transformers backend: 1 vs N concurrent requests, batched vs sequential.

Builds a random-weight Llama model of the chosen size (no download), loads it through the same
`TransformersProvider` users run (CUDA bf16 when present), and prints generated tokens/s.

    python bench/local_llm.py --size 1b --concurrency 32 --max-tokens 64     # on a GPU machine
    python bench/local_llm.py --size tiny --concurrency 8 --max-tokens 16    # anywhere
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from services.llm.providers.transformers_local import TransformersProvider  # noqa: E402
from supportbot.contracts.llm import ChatMessage, GenerationContext  # noqa: E402
from tests.tiny_model import build_tiny_model  # noqa: E402

SIZES = {  # hidden, layers, heads, intermediate
    "tiny": (64, 2, 4, 128),
    "100m": (768, 12, 12, 2048),
    "1b": (2048, 16, 32, 5632),
}


def prompt(i: int) -> list[ChatMessage]:
    return [ChatMessage(role="system", content="You are a helpful support assistant."),
            ChatMessage(role="user", content=f"Customer {i}: where is my order and when will it arrive?")]


async def measure(provider: TransformersProvider, concurrency: int, max_tokens: int, batched: bool) -> float:
    started = time.perf_counter()
    if batched:
        results = await asyncio.gather(*(provider.generate(prompt(i), GenerationContext(), temperature=0.0,
                                                           max_tokens=max_tokens) for i in range(concurrency)))
    else:
        results = [await provider.generate(prompt(i), GenerationContext(), temperature=0.0, max_tokens=max_tokens)
                   for i in range(concurrency)]
    elapsed = time.perf_counter() - started
    return sum(r.completion_tokens for r in results) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    hidden, layers, heads, intermediate = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        path = build_tiny_model(Path(tmp) / f"random-llama-{args.size}", hidden_size=hidden, layers=layers,
                                heads=heads, intermediate_size=intermediate, vocab_size=400)
        provider = TransformersProvider(path, max_batch_size=args.concurrency, max_wait_ms=10)
        params = sum(p.numel() for p in provider.lm.parameters())
        print(f"model: random Llama {params / 1e6:.0f}M parameters, device {provider.device}, dtype {provider.dtype}")
        await measure(provider, 2, 4, batched=True)  # warm-up (kernels, allocator)
        one = await measure(provider, 1, args.max_tokens, batched=True)
        sequential = await measure(provider, args.concurrency, args.max_tokens, batched=False)
        batched = await measure(provider, args.concurrency, args.max_tokens, batched=True)
        await provider.aclose()
    print(f"1 request:                          {one:8.1f} tokens/s")
    print(f"{args.concurrency} requests, one at a time:     {sequential:8.1f} tokens/s")
    print(f"{args.concurrency} concurrent, dynamic batching: {batched:8.1f} tokens/s")
    print(f"batching speed-up over sequential: {batched / sequential:.1f}x "
          f"(batch sizes seen: {sorted(set(provider.batcher.batch_sizes))})")


if __name__ == "__main__":
    asyncio.run(main())
