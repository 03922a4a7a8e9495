"""Fine-tuning the sentence encoder on a tenant's intents, for a model directory of its own.

The packaged all-MiniLM-L6-v2 is trained with a cosine-softmax head over the intent labels (label smoothing,
AdamW, linear warm-up and decay, length-bucketed batches), then exported exactly like the
shared encoder (`services.nlp.encoder.export_onnx`): int8 ONNX, one utterance per call at prediction time.
The head is thrown away; the intent classifier is fitted on the tuned embeddings afterwards, so a tuned
encoder is only a better embedding of this data set's utterances.

The word-embedding table (half of the 22M weights) stays frozen: updating it costs a fifth of the time and
gained nothing on BANKING77. On CPUs with native bfloat16 the forward pass runs under bf16 autocast, 1.6x
faster at the same held-out accuracy (docs/benchmarks.md). Without it (AVX2-only CPUs) a step costs about
three times as much, so tuning has a time budget: it measures its own pace as it goes and ends the linear
decay early, after fewer epochs, when all of them would overrun (`TuningOptions.time_budget_s`). Needs torch
and transformers (the `nlp` extra); uses every CPU this process may run on.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.nlp.encoder import (
    ENCODER_NAME,
    MAX_LENGTH,
    TOKENIZER_FILE,
    EncoderUnavailable,
    SentenceEncoder,
    export_onnx,
    load_base_model,
    mean_pool,
)

log = logging.getLogger(__name__)

TUNED_NAME = f"{ENCODER_NAME}-tuned"


@dataclass(frozen=True)
class TuningOptions:
    """How the encoder is fine-tuned; the defaults tune on BANKING77 (9k utterances) in about 5 min on 2 cores."""

    epochs: int = 4
    batch_size: int = 32
    encoder_lr: float = 1.5e-4
    head_lr: float = 1e-2
    warmup_share: float = 0.06
    scale: float = 20.0  # cosine logits are multiplied by this before the softmax
    label_smoothing: float = 0.1
    seed: int = 0
    bf16: bool | None = None  # bfloat16 autocast; None: where the CPU computes it natively (AVX512-BF16, AMX)
    # Seconds of training steps at most (None: no limit). The default keeps `intents train` on BANKING77 under
    # 10 minutes on 2 cores whether or not the CPU has bfloat16 (docs/benchmarks.md): 270 s did, at 8 min 30 s
    # on an AVX2-only host, before the words-only fast path added two TF-IDF fits (10 s each on AVX-512).
    time_budget_s: float | None = 250.0


BUDGET_CHECK_EVERY = 25  # steps between re-estimates of how many steps the time budget affords


@dataclass
class Schedule:
    """Linear warm-up then linear decay to zero over `total` steps, where `total` is what the budget affords."""

    planned: int
    warmup_share: float
    total: int = 0

    def __post_init__(self) -> None:
        self.total = self.planned

    def factor(self, step: int) -> float:
        """The learning-rate multiplier at `step` (LambdaLR's contract)."""
        warmup = max(1, int(self.warmup_share * self.total))
        return min(1.0, (step + 1) / warmup) * max(0.0, (self.total - step) / self.total)

    def fit_budget(self, done: int, elapsed: float, budget: float) -> None:
        """Re-plan from the pace so far: `done` steps took `elapsed` seconds of a `budget`."""
        affordable = int(budget * done / elapsed) if elapsed > 0 else self.planned
        self.total = min(self.planned, max(done + 1, affordable))


def tune_encoder(texts: Sequence[str], labels: Sequence[str], out: Path,
                 options: TuningOptions | None = None) -> SentenceEncoder:
    """Fine-tune on (texts, labels), export into `out` (created) and return the encoder loaded from there."""
    options = options or TuningOptions()
    try:
        import torch
    except ImportError as exc:
        raise EncoderUnavailable(f"fine-tuning the encoder needs torch (install supportbot[prepare]): {exc}") from exc
    started = time.perf_counter()
    bert, source = load_base_model()
    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        facts = _train(bert, source, list(texts), list(labels), options)
    finally:
        torch.set_num_threads(threads)
    bert.eval()
    out.mkdir(parents=True, exist_ok=True)
    seconds = round(time.perf_counter() - started, 1)
    export_onnx(bert, source, out, {
        "name": TUNED_NAME, "tuned": {**asdict(options), **facts, "examples": len(texts),
                                      "labels": len(set(labels)), "seconds": seconds}})
    log.info("sentence encoder fine-tuned", extra={"supportbot.seconds": seconds, "supportbot.examples": len(texts)})
    return SentenceEncoder(out)


def _train(bert: Any, source: Path, texts: list[str], labels: list[str],
           options: TuningOptions) -> dict[str, Any]:
    """Train `bert` in place; returns what to record: the mean loss of each epoch and the precision used."""
    import torch
    from tokenizers import Tokenizer

    rng = random.Random(options.seed)
    torch.manual_seed(options.seed)
    tokenizer = Tokenizer.from_file(str(source / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token, not a secret
    classes = sorted(set(labels))
    index = {label: i for i, label in enumerate(classes)}
    targets = torch.tensor([index[label] for label in labels])
    head = torch.nn.Linear(bert.config.hidden_size, len(classes))
    bert.embeddings.word_embeddings.weight.requires_grad_(False)
    bf16 = _native_bf16() if options.bf16 is None else options.bf16
    trained = [p for p in bert.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": trained, "lr": options.encoder_lr},
                                   {"params": head.parameters(), "lr": options.head_lr}], weight_decay=0.01)
    per_epoch = -(-len(texts) // options.batch_size)
    schedule = Schedule(options.epochs * per_epoch, options.warmup_share)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.factor)
    lengths = [len(text) for text in texts]
    losses: list[float] = []
    step = 0
    started = time.perf_counter()
    bert.train()
    for _ in range(options.epochs):
        if step >= schedule.total:
            break
        running, run = 0.0, 0
        for batch in _length_bucketed(lengths, options.batch_size, rng):
            if step >= schedule.total:
                break
            encoded = tokenizer.encode_batch([texts[i] for i in batch])
            ids = torch.tensor([e.ids for e in encoded])
            mask = torch.tensor([e.attention_mask for e in encoded])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
            embedding = mean_pool(hidden.float(), mask)
            logits = options.scale * torch.nn.functional.linear(
                embedding, torch.nn.functional.normalize(head.weight, dim=1)) + head.bias
            loss = torch.nn.functional.cross_entropy(logits, targets[batch], label_smoothing=options.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            running, run, step = running + loss.item(), run + 1, step + 1
            if options.time_budget_s is not None and step % BUDGET_CHECK_EVERY == 0:
                schedule.fit_budget(step, time.perf_counter() - started, options.time_budget_s)
        if run:
            losses.append(round(running / run, 4))
    if step < schedule.planned:
        log.warning("fine-tuning stopped by its time budget after %.2f of %d epochs (%.0f s)",
                    step / per_epoch, options.epochs, options.time_budget_s or 0)
    return {"epoch_losses": losses, "bf16": bf16, "steps": step, "planned_steps": schedule.planned,
            "epochs_run": round(step / per_epoch, 2)}


def _native_bf16() -> bool:
    import torch

    cpu = torch.cpu
    return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported",
                                                                   "_is_amx_tile_supported"))


def _length_bucketed(lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths: padding to the longest in a batch then wastes little."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    window = size * 50
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lengths.__getitem__)
        batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(batches)
    return batches
