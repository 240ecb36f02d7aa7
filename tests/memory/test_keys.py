"""Every L1 and L4 key comes from memory.keys: pure, unambiguous, and short enough for S3."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from bus.limits import NAMESPACE_CHARS, SESSION_ID_CHARS
from bus.schemas import memory as s
from memory import keys

ID = "0b6c5f3e-8a43-4a6f-9a55-0d1f6a1b2c3d"

TABLE: list[tuple[str, Callable[[], str], str]] = [
    ("item", lambda: keys.item(ID), f"item:{ID}"),
    ("generation", lambda: keys.generation("default"), "gen:default"),
    ("generation-escaped", lambda: keys.generation("a:b/c"), "gen:a%3Ab%2Fc"),
    ("session", lambda: keys.session("default", "cursor-1"), "session:default:cursor-1"),
    ("session-escaped", lambda: keys.session("a:b", "c"), "session:a%3Ab:c"),
    ("session-unicode", lambda: keys.session("ns", "é"), "session:ns:%C3%A9"),
    ("cache-entry", lambda: keys.cache_entry(ID), f"cache:{ID}"),
    ("archived-item", lambda: keys.archived_item(ID), f"items/{ID}"),
    ("cached-calls", lambda: keys.cached_calls("gpt-4o"), "cache:gpt-4o"),
    ("space-model", lambda: keys.space_model("items"), "model:items"),
]


@pytest.mark.parametrize(("case", "build", "expected"), TABLE, ids=[c[0] for c in TABLE])
def test_key_is_built_as_documented(case: str, build: Callable[[], str], expected: str) -> None:
    assert build() == expected


def test_archived_session_key_is_versioned_under_a_digest_of_its_ids() -> None:
    first = keys.archived_session("default", "cursor-1", 1)
    second = keys.archived_session("default", "cursor-1", 2)
    digest = first.split("/")[1]
    assert first == f"sessions/{digest}/1"
    assert second == f"sessions/{digest}/2"
    assert len(digest) == 32


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (("a:b", "c"), ("a", "b:c")),
        (("a/b", "c"), ("a", "b/c")),
        (("a%3Ab", "c"), ("a:b", "c")),
    ],
    ids=["colon", "slash", "escape-lookalike"],
)
def test_session_keys_of_different_sessions_never_meet(
    one: tuple[str, str], other: tuple[str, str]
) -> None:
    assert keys.session(*one) != keys.session(*other)
    assert keys.archived_session(*one, 1) != keys.archived_session(*other, 1)


def test_archived_session_key_of_the_longest_ids_fits_s3() -> None:
    key = keys.archived_session(
        "\N{GRINNING FACE}" * NAMESPACE_CHARS, "/" * SESSION_ID_CHARS, 10**18
    )
    assert len(key.encode()) < 1024


def test_search_key_depends_on_generation_budget_and_request() -> None:
    request = s.SearchRequest(query="retry policy")
    base = keys.search(1, 1000, request)
    assert base.startswith("search:")
    assert base == keys.search(1, 1000, s.SearchRequest(query="retry policy"))
    assert base != keys.search(2, 1000, request)
    assert base != keys.search(1, 2000, request)
    assert base != keys.search(1, 1000, s.SearchRequest(query="retry policy", k=11))


KEY_HEADS = re.compile(r"""f?["'](item:|gen:|session:|cache:|search:|items/|sessions/|model:)""")


def test_no_module_but_keys_spells_a_key() -> None:
    root = Path(keys.__file__).parent
    spelled = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "keys.py"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if KEY_HEADS.search(line)
    ]
    assert spelled == []
