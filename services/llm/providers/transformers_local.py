"""In-process generation with Hugging Face `transformers` from a local model directory.

CUDA with bf16 when a GPU is present, CPU (float32) otherwise. Concurrent requests are batched dynamically
(`DynamicBatcher`): one left-padded `generate` call serves a whole batch instead of one call per request.
Token counts come from the model's own tokenizer, so they are exact. Streaming yields the batched answer in
word-sized pieces once it is generated (batching and token-by-token streaming exclude each other here);
`top_p`, `stop` and tools are not supported and are ignored, as the provider interface allows.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.llm.providers.base import NO_OPTIONS, Delta, Generation, GenerationOptions, ProviderError, TokenUsage
from services.llm.providers.batching import DynamicBatcher
from supportbot.contracts.llm import ChatMessage, GenerationContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Request:
    prompt: str
    temperature: float
    max_tokens: int


@dataclass(frozen=True)
class _Result:
    text: str
    prompt_tokens: int
    completion_tokens: int


class TransformersProvider:
    """A local causal LM; `name` is "transformers", answers are cacheable like any model's."""

    name = "transformers"
    cacheable = True

    def __init__(self, model_path: Path, *, device: str | None = None, max_batch_size: int = 32,
                 max_wait_ms: float = 5.0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not (model_path / "config.json").is_file():
            raise FileNotFoundError(f"{model_path} is not a transformers model directory (no config.json)")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = model_path.name
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.tokenizer.padding_side = "left"  # generation continues from the right edge of every row
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.lm = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True, dtype=self.dtype)
        self.lm.to(self.device).eval()
        self._torch = torch
        self.batcher: DynamicBatcher[_Request, _Result] = DynamicBatcher(
            self._generate_batch, key=lambda r: r.temperature, max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms)
        log.info("local model loaded", extra={"supportbot.model": self.model, "supportbot.device": self.device})

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The model's chat template when it has one, else a plain role-prefixed transcript."""
        turns = [{"role": m.role, "content": m.content or ""} for m in messages]
        if getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True))
        return "".join(f"{t['role']}: {t['content']}\n" for t in turns) + "assistant:"

    def _generate_batch(self, requests: Sequence[_Request]) -> list[_Result]:
        torch = self._torch
        encoded = self.tokenizer([r.prompt for r in requests], return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
        temperature = requests[0].temperature  # the batcher groups by temperature
        sampling: dict[str, Any] = ({"do_sample": True, "temperature": temperature} if temperature > 0
                                    else {"do_sample": False})
        with torch.inference_mode():
            output = self.lm.generate(**encoded, max_new_tokens=max(r.max_tokens for r in requests),
                                      pad_token_id=self.tokenizer.pad_token_id, **sampling)
        width = encoded["input_ids"].shape[1]
        results = []
        for row, request in enumerate(requests):
            new_tokens = output[row, width:width + request.max_tokens].tolist()
            if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id in new_tokens:
                new_tokens = new_tokens[:new_tokens.index(self.tokenizer.eos_token_id)]
            results.append(_Result(
                text=self.tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
                prompt_tokens=int(encoded["attention_mask"][row].sum()),
                completion_tokens=len(new_tokens),
            ))
        return results

    async def generate(self, messages: list[ChatMessage], context: GenerationContext, *,
                       temperature: float, max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> Generation:
        try:
            result = await self.batcher.submit(_Request(self.render(messages), temperature, max_tokens))
        except (RuntimeError, ValueError) as exc:  # CUDA OOM, bad inputs: let the next provider answer
            raise ProviderError("local_model_error", str(exc)[:200]) from exc
        if not result.text:
            raise ProviderError("empty_response", "local model produced no text")
        return Generation(text=result.text, prompt_tokens=result.prompt_tokens,
                          completion_tokens=result.completion_tokens, model=self.model)

    async def stream(self, messages: list[ChatMessage], context: GenerationContext, *, temperature: float,
                     max_tokens: int, options: GenerationOptions = NO_OPTIONS) -> AsyncIterator[Delta]:
        generation = await self.generate(messages, context, temperature=temperature, max_tokens=max_tokens)
        words = generation.text.split(" ")
        for index, word in enumerate(words):
            yield Delta(text=word if index == 0 else " " + word, model=self.model)
        yield Delta(usage=TokenUsage(generation.prompt_tokens, generation.completion_tokens), model=self.model,
                    finish_reason="stop")

    async def aclose(self) -> None:
        await self.batcher.aclose()
