"""Bad input is refused once, where msgspec decodes the request (a 400 naming the field), and the
published JSON Schema states exactly those limits; the engine checks only what no schema can."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, get_args

import jsonschema
import msgspec
import pytest

from bus import codec
from bus.errors import BadRequestError, describe
from bus.limits import PATH_PART_CHARS, TAGS, TEXT_CHARS
from bus.schemas import memory as s
from memory.budget import HIT_METADATA_NESTING
from memory.engine import MemoryEngine

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]

TEN_MB = "x" * (10 * 1024 * 1024)


def nested(levels: int) -> dict[str, Any]:
    """A dict of ``levels`` levels of its own: ``{"a": {"a": … {}}}``."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


# (case, request type, body, the field the 400 names)
BAD: list[tuple[str, type, dict[str, Any], str]] = [
    ("store-empty-text", s.StoreRequest, {"text": ""}, "text"),
    ("store-blank-text", s.StoreRequest, {"text": "   \n"}, "text"),
    ("store-ten-mb-text", s.StoreRequest, {"text": TEN_MB}, "text"),
    ("store-text-not-string", s.StoreRequest, {"text": 123}, "text"),
    ("store-unknown-kind", s.StoreRequest, {"text": "x", "kind": "recipe"}, "kind"),
    ("store-metadata-not-object", s.StoreRequest, {"text": "x", "metadata": "tags"}, "metadata"),
    ("store-namespace-empty", s.StoreRequest, {"text": "x", "namespace": ""}, "namespace"),
    ("store-namespace-blank", s.StoreRequest, {"text": "x", "namespace": " "}, "namespace"),
    ("store-namespace-long", s.StoreRequest, {"text": "x", "namespace": "n" * 129}, "namespace"),
    ("search-k-zero", s.SearchRequest, {"query": "x", "k": 0}, "k"),
    ("search-k-too-big", s.SearchRequest, {"query": "x", "k": 1000}, "k"),
    ("search-k-not-int", s.SearchRequest, {"query": "x", "k": "5"}, "k"),
    ("search-empty-query", s.SearchRequest, {"query": ""}, "query"),
    ("search-long-query", s.SearchRequest, {"query": "q" * 8193}, "query"),
    ("search-unknown-kind", s.SearchRequest, {"query": "x", "kinds": ["recipe"]}, "kinds[0]"),
    ("search-unknown-mode", s.SearchRequest, {"query": "x", "mode": "fuzzy"}, "mode"),
    (
        "search-too-many-tags",
        s.SearchRequest,
        {"query": "x", "filters": {"tags": ["t"] * (TAGS + 1)}},
        "filters.tags",
    ),
    (
        "search-tag-too-long",
        s.SearchRequest,
        {"query": "x", "filters": {"tags": ["t" * 8193]}},
        "filters.tags[0]",
    ),
    (
        "search-tags-not-list",
        s.SearchRequest,
        {"query": "x", "filters": {"tags": "a"}},
        "filters.tags",
    ),
    ("get-empty-id", s.GetRequest, {"id": ""}, "id"),
    ("get-long-id", s.GetRequest, {"id": "i" * 65}, "id"),
    ("delete-long-id", s.DeleteRequest, {"id": "i" * 65}, "id"),
    ("index-empty-path", s.IndexRequest, {"path": ""}, "path"),
    ("index-long-path", s.IndexRequest, {"path": "/" + "p" * 4096}, "path"),
    ("index-blank-namespace", s.IndexRequest, {"path": "/x", "namespace": "  "}, "namespace"),
    ("stats-blank-namespace", s.StatsRequest, {"namespace": "  "}, "namespace"),
    ("session-save-empty-id", s.SessionSaveRequest, {"session_id": ""}, "session_id"),
    ("session-save-long-id", s.SessionSaveRequest, {"session_id": "s" * 257}, "session_id"),
    ("session-load-empty-id", s.SessionLoadRequest, {"session_id": ""}, "session_id"),
    (
        "session-summary-long",
        s.SessionSaveRequest,
        {"session_id": "c", "summary": "s" * (TEXT_CHARS + 1)},
        "summary",
    ),
    ("lookup-empty-model", s.CacheLookupRequest, {"model": "", "prompt": "p"}, "model"),
    ("lookup-empty-prompt", s.CacheLookupRequest, {"model": "m", "prompt": ""}, "prompt"),
    (
        "lookup-threshold-zero",
        s.CacheLookupRequest,
        {"model": "m", "prompt": "p", "threshold": 0},
        "threshold",
    ),
    (
        "lookup-threshold-above-one",
        s.CacheLookupRequest,
        {"model": "m", "prompt": "p", "threshold": 1.5},
        "threshold",
    ),
    (
        "put-ttl-zero",
        s.CachePutRequest,
        {"model": "m", "prompt": "p", "response": "r", "ttl_s": 0},
        "ttl_s",
    ),
    (
        "put-ttl-over-a-year",
        s.CachePutRequest,
        {"model": "m", "prompt": "p", "response": "r", "ttl_s": 366 * 86400},
        "ttl_s",
    ),
]

GOOD: list[tuple[str, type, dict[str, Any]]] = [
    ("store", s.StoreRequest, {"text": "x", "kind": "decision", "metadata": {"a": [1]}}),
    ("store-longest-text", s.StoreRequest, {"text": "t" * TEXT_CHARS}),
    ("search", s.SearchRequest, {"query": "x", "k": 100, "kinds": list(s.KINDS)}),
    (
        "search-blank-filters",
        s.SearchRequest,
        {"query": "x", "filters": {"path": "", "tags": [""]}},
    ),
    ("get-longest-id", s.GetRequest, {"id": "i" * 64}),
    ("index-no-namespace", s.IndexRequest, {"path": "/x", "namespace": ""}),
    ("stats-every-namespace", s.StatsRequest, {}),
    ("session-blank-summary", s.SessionSaveRequest, {"session_id": "c", "summary": ""}),
    ("put-blank-response", s.CachePutRequest, {"model": "m", "prompt": "p", "response": ""}),
    ("lookup-threshold-one", s.CacheLookupRequest, {"model": "m", "prompt": "p", "threshold": 1}),
]


@pytest.mark.parametrize(("case", "cls", "body", "field"), BAD, ids=[c[0] for c in BAD])
def test_decoding_refuses_bad_input_with_400_naming_the_field(
    case: str, cls: type, body: dict[str, Any], field: str
) -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        codec.decode(msgspec.json.encode(body), cls)
    code, text = describe(info.value)
    assert code == 400
    assert f"`$.{field}`" in text


@pytest.mark.parametrize(("case", "cls", "body", "field"), BAD, ids=[c[0] for c in BAD])
def test_published_schema_refuses_what_decoding_refuses(
    case: str, cls: type, body: dict[str, Any], field: str
) -> None:
    validator = jsonschema.Draft202012Validator(msgspec.json.schema(cls))
    assert not validator.is_valid(body)


@pytest.mark.parametrize(("case", "cls", "body"), GOOD, ids=[c[0] for c in GOOD])
def test_published_schema_and_decoding_accept_the_same_good_input(
    case: str, cls: type, body: dict[str, Any]
) -> None:
    decoded = codec.decode(msgspec.json.encode(body), cls)
    validator = jsonschema.Draft202012Validator(msgspec.json.schema(cls))
    assert isinstance(decoded, cls)
    assert validator.is_valid(body)


def test_a_refused_value_is_never_quoted_back() -> None:
    with pytest.raises(msgspec.ValidationError) as info:
        codec.decode(b'{"text": "x", "kind": "s3cr3t-kind"}', s.StoreRequest)
    _, text = describe(info.value)
    assert "s3cr3t" not in text


def test_kinds_are_the_kind_literal() -> None:
    assert s.KINDS == get_args(s.Kind)


def test_decode_accepts_unknown_fields_from_newer_senders() -> None:
    request = codec.decode(b'{"query": "x", "added_later": true}', s.SearchRequest)
    assert (request.query, request.k) == ("x", 10)


def test_decode_names_the_body_when_it_is_not_json() -> None:
    with pytest.raises(msgspec.DecodeError) as info:
        codec.decode(b"{not json", s.SearchRequest)
    assert describe(info.value)[0] == 400


# ---- what only the engine can check --------------------------------------------------------


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_store_refuses_text_over_max_text_bytes_in_utf8(engine: MemoryEngine) -> None:
    emoji = "\N{GRINNING FACE}" * 200_000  # within TEXT_CHARS characters, 800 000 bytes
    with pytest.raises(BadRequestError) as info:
        await engine.store(s.StoreRequest(text=emoji))
    assert info.value.description.startswith("text:")


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_store_refuses_metadata_a_search_reply_could_not_carry(
    engine: MemoryEngine,
) -> None:
    deep = codec.decode(
        msgspec.json.encode({"text": "deep", "metadata": nested(HIT_METADATA_NESTING + 1)}),
        s.StoreRequest,
    )  # the codec lets it through: a search reply nests it two levels deeper
    with pytest.raises(BadRequestError) as info:
        await engine.store(deep)
    assert info.value.description.startswith("metadata:")


def _long_component(tmp: Path) -> str:
    return str(tmp / ("c" * (PATH_PART_CHARS + 1)))


@pytest.mark.parametrize(
    ("case", "path"),
    [
        ("nul", lambda tmp: str(tmp) + "/a\0b"),
        ("long-component", _long_component),
        ("long-bytes-component", lambda tmp: str(tmp / ("\N{GRINNING FACE}" * 100))),
        ("long-once-resolved", lambda tmp: "d/" * 2040),
        ("missing", lambda tmp: str(tmp / "missing")),
        ("a-file", lambda tmp: str(Path(__file__))),
    ],
    ids=lambda case: case if isinstance(case, str) else "",
)
@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_index_refuses_a_path_that_is_no_directory_with_400_naming_path(
    engine: MemoryEngine, tmp_path: Path, case: str, path: Any
) -> None:
    request = codec.decode(msgspec.json.encode({"path": path(tmp_path)}), s.IndexRequest)
    with pytest.raises(BadRequestError) as info:
        await engine.index(request)
    assert info.value.description.startswith("path:")


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_index_refuses_a_directory_name_that_is_no_namespace(
    engine: MemoryEngine, tmp_path: Path
) -> None:
    root = tmp_path / ("n" * 200)
    root.mkdir()
    with pytest.raises(BadRequestError) as info:
        await engine.index(s.IndexRequest(path=str(root)))
    named = await engine.index(s.IndexRequest(path=str(root), namespace="short"))
    assert info.value.description.startswith("namespace:")
    assert named.namespace == "short"


# ---- no error text echoes input -------------------------------------------------------------

#: names that hold what a caller sent (or parts of it); an error text must not format them
CALLER_INPUT = {
    "req", "request", "value", "path", "root", "ident", "sid", "session_id", "namespace",
    "text", "query", "key", "model", "prompt", "response", "subject", "metadata", "context",
}  # fmt: skip
SOURCES = [
    *sorted((ROOT / "memory").rglob("*.py")),
    ROOT / "agents" / "memory.py",
]


def _formatted_input(tree: ast.AST) -> list[str]:
    """``name:line`` of every caller-input name an error's f-string formats."""
    found = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        name = getattr(call.func, "id", getattr(call.func, "attr", ""))
        if not name.endswith("Error"):
            continue
        for text in (a for a in call.args if isinstance(a, ast.JoinedStr)):
            for part in (p for p in text.values if isinstance(p, ast.FormattedValue)):
                names = {n.id for n in ast.walk(part.value) if isinstance(n, ast.Name)}
                found += [f"{n}:{call.lineno}" for n in sorted(names & CALLER_INPUT)]
    return found


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_error_text_formats_caller_input(source: Path) -> None:
    assert _formatted_input(ast.parse(source.read_text())) == []


def test_the_input_guard_catches_an_echo() -> None:
    echo = ast.parse('raise NotFoundError(f"id: no item {req.id}")')
    assert _formatted_input(echo) == ["req:1"]
