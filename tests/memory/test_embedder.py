"""The ONNX embedder, dynamic batching, and the choice of ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import anyio
import numpy as np
import pytest

from bus.errors import ConfigError
from memory import runtime
from memory.batcher import BatchingEmbedder
from memory.embedder import Embedder
from memory.quantize import quantized


def test_embed_returns_unit_vectors_in_input_order(embedder: Embedder) -> None:
    texts = ["a short one", "a considerably longer sentence about http clients and retries", "x"]
    together = embedder.embed(texts)
    alone = np.stack([embedder.embed([t])[0] for t in texts])
    assert together.shape == (3, embedder.dim)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert np.allclose(together, alone, atol=1e-4)


def test_embed_puts_similar_meanings_closer(embedder: Embedder) -> None:
    a, b, c = embedder.embed(
        ["How do I retry a failed upload?", "retrying uploads that failed", "pasta recipe"]
    )
    assert float(a @ b) > float(a @ c) + 0.3


def test_cpu_session_plans_no_memory_pattern_per_input_shape(embedder: Embedder) -> None:
    # every text length and batch size is a new input shape; a pattern kept per shape made the
    # memory agent grow for as long as it ran (bench/soak.py)
    if embedder.device != "cpu":
        pytest.skip("the memory pattern stays on where a GPU runs the model")
    assert embedder._session.get_session_options().enable_mem_pattern is False


@pytest.mark.anyio
async def test_concurrent_callers_share_one_model_run(embedder: Embedder) -> None:
    batching = BatchingEmbedder(embedder, max_batch=32)
    texts = [f"concurrent caller number {i} asks about caching" for i in range(32)]
    results: dict[int, np.ndarray] = {}

    async def call(i: int) -> None:
        results[i] = await batching.embed_one(texts[i])

    async with anyio.create_task_group() as tg:
        for i in range(32):
            tg.start_soon(call, i)
    expected = embedder.embed(texts)
    assert batching.calls == 32
    assert batching.runs <= 2
    assert all(np.allclose(results[i], expected[i], atol=1e-4) for i in range(32))


@pytest.mark.anyio
async def test_batch_failure_reaches_every_caller(embedder: Embedder) -> None:
    batching = BatchingEmbedder(embedder, max_batch=8, max_wait_ms=20)
    errors: list[BaseException] = []

    async def call(value: object) -> None:
        try:
            await batching.embed([value])  # type: ignore[list-item]
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for value in ["fine", 42, "also fine"]:
            tg.start_soon(call, value)
    assert len(errors) == 3


@pytest.mark.parametrize(
    ("found", "message"),
    [
        ({"onnxruntime", "onnxruntime-gpu"}, "both onnxruntime and onnxruntime-gpu"),
        (set(), "no ONNX Runtime"),
    ],
    ids=["both", "none"],
)
def test_check_installation_refuses_both_or_neither(found: set[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        runtime.check_installation(found)
    assert message in info.value.description


def test_choose_falls_back_to_cpu_quietly_without_a_gpu_package() -> None:
    choice = runtime.choose("auto", {"onnxruntime"})
    assert (choice.device, choice.providers) == ("cpu", ("CPUExecutionProvider",))
    assert "onnxruntime-gpu is not installed" in choice.reason


def test_choose_refuses_cuda_it_cannot_honour() -> None:
    with pytest.raises(ConfigError) as info:
        runtime.choose("cuda", {"onnxruntime"})
    assert info.value.description.startswith("embed_device:")


@pytest.mark.gpu
def test_embedder_runs_on_cuda_when_asked() -> None:
    if runtime.cuda_device_count() < 1:
        pytest.skip("no CUDA device here")
    assert Embedder(device="cuda").device == "cuda"


@pytest.mark.anyio
async def test_big_calls_run_batch_by_batch_in_input_order(embedder: Embedder) -> None:
    batching = BatchingEmbedder(embedder, max_batch=4)
    texts = [("word " * (i % 7 + 1)) + str(i) for i in range(10)]
    result = await batching.embed(texts)
    assert batching.runs == 3
    assert np.allclose(result, embedder.embed(texts), atol=1e-4)


def test_cpu_int8_variant_is_built_once_and_is_its_own_vector_space(
    embedder: Embedder, tmp_path: Path
) -> None:
    packaged = Embedder(threads=2)
    first = quantized(packaged.model, tmp_path)
    second = quantized(packaged.model, tmp_path)
    texts = ["retry the upload with backoff", "def close(self) -> None: ...", "cookie jar"]
    cosines = np.sum(packaged.embed(texts) * embedder.embed(texts), axis=1)
    assert first == second
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    assert first.model_id != packaged.model_id
    assert "+dynint8." in embedder.model_id
    assert cosines.min() > 0.97


def test_parallel_runs_give_the_vectors_of_one_run_at_a_time(
    embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> None:
    one_at_a_time = Embedder(threads=1, quantize_dir=tmp_path_factory.mktemp("models"))
    texts = [f"{'retry the upload ' * (i % 5 + 1)}{i}" for i in range(24)]
    assert (embedder.parallel_runs, one_at_a_time.parallel_runs) == (2, 1)
    assert np.allclose(embedder.embed(texts), one_at_a_time.embed(texts), atol=1e-6)
    one_at_a_time.close()
