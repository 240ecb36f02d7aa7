"""What a chunk's vector is made of: its whole text and, for a Python definition, a summary."""

from __future__ import annotations

import numpy as np
import pytest

from memory.chunking import chunk_file
from memory.embedder import Embedder
from memory.keywords import embed_input
from memory.views import SUMMARY_WEIGHT, item_vectors, summary

pytestmark = pytest.mark.anyio

SOURCE = '''class Client:
    def flush(self, timeout: float = 2.0) -> None:
        """Send everything buffered and wait until the server has it.

        Raises TimeoutError after ``timeout`` seconds.
        """
        self._pending.clear()
''' + "".join(f"\n    def m{i}(self):\n        return {i}\n" for i in range(8))


def test_a_bare_class_line_is_not_a_chunk_of_its_own() -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(30))
    chunks = chunk_file(
        "c.py", f"class C(Base):\n    def a(self):\n{body}\n    def b(self):\n        pass\n"
    )
    assert [c.symbol for c in chunks] == ["C.a", "C.b"]
    documented = chunk_file("d.py", f'class D:\n    """Docs."""\n    def a(self):\n{body}\n')
    assert [(c.symbol, c.unit) for c in documented] == [("D", "class"), ("D.a", "function")]


def test_the_summary_holds_path_split_name_signature_and_first_paragraph() -> None:
    method = next(c for c in chunk_file("nats/client.py", SOURCE) if c.symbol == "Client.flush")
    text = summary(method.text, method.metadata)
    assert text is not None
    head, signature, doc = text.splitlines()
    assert head == "nats/client.py Client.flush (client flush)"
    assert signature == "def flush(self, timeout: float = 2.0) -> None:"
    assert doc == "Send everything buffered and wait until the server has it."


def test_only_python_definitions_have_a_summary() -> None:
    assert summary("we chose Redis", {"title": "cache"}) is None
    assert (
        summary("## Setup", {"path": "README.md", "symbol": "Setup", "language": "markdown"})
        is None
    )


async def test_a_definition_vector_is_the_weighted_unit_sum_of_both_views(
    embedder: Embedder,
) -> None:
    async def embed(texts: list[str]) -> np.ndarray:
        return embedder.embed(texts)

    method = next(c for c in chunk_file("nats/client.py", SOURCE) if c.symbol == "Client.flush")
    note = ("we chose Redis for the hot tier", {"title": "cache"})
    vectors = await item_vectors(embed, [(method.text, method.metadata), note])
    whole, short, plain = embedder.embed(
        [
            embed_input(method.text, method.metadata),
            summary(method.text, method.metadata) or "",
            embed_input(*note),
        ]
    )
    expected = whole + SUMMARY_WEIGHT * short
    np.testing.assert_allclose(vectors[0], expected / np.linalg.norm(expected), atol=1e-5)
    np.testing.assert_allclose(vectors[1], plain, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
