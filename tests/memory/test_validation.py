"""Bad input is refused with a BadRequestError (a 400 on the bus) that names the field."""

from __future__ import annotations

from typing import Any

import pytest

from bus.errors import BadRequestError
from bus.schemas import memory as s
from memory import validation
from memory.engine import MemoryEngine

pytestmark = pytest.mark.anyio

TEN_MB = "x" * (10 * 1024 * 1024)

STORE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("empty-text", {"text": ""}, "text:"),
    ("blank-text", {"text": "   \n"}, "text:"),
    ("ten-mb-text", {"text": TEN_MB}, "text:"),
    ("text-not-string", {"text": 123}, "text:"),
    ("unknown-kind", {"text": "x", "kind": "recipe"}, "kind:"),
    ("metadata-not-object", {"text": "x", "metadata": "tags"}, "metadata:"),
    ("namespace-empty", {"text": "x", "namespace": ""}, "namespace:"),
]


@pytest.mark.parametrize(("case", "fields", "field"), STORE_CASES, ids=[c[0] for c in STORE_CASES])
@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_store_rejects_bad_input_naming_the_field(
    engine: MemoryEngine, case: str, fields: dict[str, Any], field: str
) -> None:
    request = s.StoreRequest(text="placeholder")
    for name, value in fields.items():
        setattr(request, name, value)
    with pytest.raises(BadRequestError) as info:
        await engine.store(request)
    assert info.value.description.startswith(field)
    assert info.value.code == 400


SEARCH_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("k-zero", {"k": 0}, "k:"),
    ("k-too-big", {"k": 1000}, "k:"),
    ("k-not-int", {"k": "5"}, "k:"),
    ("empty-query", {"query": ""}, "query:"),
    ("unknown-kind", {"kinds": ["recipe"]}, "kinds:"),
]


@pytest.mark.parametrize(
    ("case", "fields", "field"), SEARCH_CASES, ids=[c[0] for c in SEARCH_CASES]
)
@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_search_rejects_bad_input_naming_the_field(
    engine: MemoryEngine, case: str, fields: dict[str, Any], field: str
) -> None:
    request = s.SearchRequest(query="retry policy")
    for name, value in fields.items():
        setattr(request, name, value)
    with pytest.raises(BadRequestError) as info:
        await engine.search(request)
    assert info.value.description.startswith(field)


@pytest.mark.parametrize(
    ("raw", "cls", "field"),
    [
        (b'{"text": 5}', s.StoreRequest, "text:"),
        (b'{"text": "x", "kind": "recipe"}', s.StoreRequest, "kind:"),
        (b'{"query": "x", "k": 0}', s.SearchRequest, "k:"),
        (b'{"query": "x", "k": "ten"}', s.SearchRequest, "k:"),
        (b'{"query": "x", "filters": {"tags": "a"}}', s.SearchRequest, "filters.tags:"),
        (b"{not json", s.SearchRequest, "body:"),
    ],
    ids=["text-type", "kind-enum", "k-bound", "k-type", "nested-type", "not-json"],
)
def test_decode_names_the_field_of_a_wire_error(raw: bytes, cls: type, field: str) -> None:
    with pytest.raises(BadRequestError) as info:
        validation.decode(raw, cls)
    assert info.value.description.startswith(field)


def test_decode_accepts_unknown_fields_from_newer_senders() -> None:
    request = validation.decode(b'{"query": "x", "added_later": true}', s.SearchRequest)
    assert (request.query, request.k) == ("x", 10)
