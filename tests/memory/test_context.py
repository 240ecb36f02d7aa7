"""memory.context: one ranked, token-budgeted pack of what matters at a place in the code."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
from tokenizers import Tokenizer

from agents.memory import MemoryAgent
from bus import Bus, Settings, codec
from bus.errors import BadRequestError
from bus.schemas import memory as s
from memory.budget import encoded_size
from memory.config import MemorySettings
from memory.embedder import TOKENIZER_PATH, Embedder
from memory.engine import MemoryEngine
from memory.tokens import ORDER
from tests.fixtures.nats_server import running
from tests.memory.conftest import BACKENDS

pytestmark = pytest.mark.anyio

SHOP = {
    "shop/__init__.py": '"""A small shop."""\n',
    "shop/pricing.py": '''"""Prices and discounts."""

from shop.tax import tax_for


def apply_discount(amount, percent):
    """Take a percentage off an amount, never below zero."""
    return max(amount - amount * percent / 100, 0)


def total_price(items, region):
    """Sum the items after their discounts, then add the region's tax."""
    subtotal = sum(apply_discount(i.amount, i.discount) for i in items)
    return subtotal + tax_for(subtotal, region)
''',
    "shop/tax.py": '''"""Sales tax by region."""

RATES = {"eu": 0.2, "us": 0.07}


def rate_of(region):
    """The tax rate of a region; unknown regions pay none."""
    return RATES.get(region, 0.0)


def tax_for(amount, region):
    """Tax due on an amount in a region, rounded to cents."""
    return round(amount * rate_of(region), 2)
''',
    "shop/checkout.py": '''"""Checkout of a cart."""

from shop.pricing import total_price


class Checkout:
    """Takes a cart to payment."""

    def __init__(self, gateway):
        self.gateway = gateway

    def pay(self, cart):
        """Charge the cart's total through the gateway."""
        total = total_price(cart.items, cart.region)
        return self.gateway.charge(total)
''',
}
BY_PATH = "Discounts are capped at 50 percent, and no price may ever go below zero."
BY_MODULE = "Every amount in shop.tax is rounded half-even to whole cents."
BY_DIRECTORY = "KeyError: 'region' when a cart arrives without a region"
ELSEWHERE = "The checkout retries the payment gateway twice before it gives up."


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """Embedded tiers, unless a test names others (``indirect`` parametrize)."""
    return getattr(request, "param", "embedded")


def write_repo(root: Path) -> Path:
    for rel, text in SHOP.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


async def remember(engine: MemoryEngine, root: Path) -> dict[str, str]:
    """Index the shop and store one note per way a note can be tied to a place."""
    await engine.index(s.IndexRequest(path=str(write_repo(root)), namespace="shop"))
    notes = [
        ("by_path", BY_PATH, "decision", {"path": "shop/pricing.py"}),
        ("by_module", BY_MODULE, "decision", {}),
        ("by_directory", BY_DIRECTORY, "error", {"path": "shop/"}),
        ("elsewhere", ELSEWHERE, "decision", {"path": "shop/checkout.py"}),
    ]
    ids = {}
    for name, text, kind, meta in notes:
        req = s.StoreRequest(text=text, kind=kind, namespace="shop", metadata=meta)
        ids[name] = (await engine.store(req)).id
    return ids


@pytest.fixture
async def shop(engine: MemoryEngine, tmp_path: Path) -> dict[str, str]:
    return await remember(engine, tmp_path / "repo")


def reasons(pack: s.ContextPack, reason: str) -> list[s.ContextEntry]:
    return [e for e in pack.entries if e.reason == reason]


def counter() -> Tokenizer:
    """The embedding model's tokenizer, loaded here on its own: the yardstick."""
    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
async def test_context_of_a_function_brings_the_notes_recorded_for_its_module(
    engine: MemoryEngine, shop: dict[str, str]
) -> None:
    pricing = await engine.context(s.ContextRequest(path="shop/pricing.py", symbol="total_price"))
    tax = await engine.context(s.ContextRequest(path="shop/tax.py", symbol="tax_for"))
    assert [e.id for e in reasons(pricing, "decision")] == [shop["by_path"]]
    assert [e.id for e in reasons(tax, "decision")] == [shop["by_module"]]
    assert [e.id for e in reasons(pricing, "error")] == [shop["by_directory"]]
    assert [e.id for e in reasons(tax, "error")] == [shop["by_directory"]]
    assert shop["elsewhere"] not in {e.id for e in pricing.entries + tax.entries}
    assert [(e.path, e.start_line, e.end_line) for e in reasons(pricing, "symbol")] == [
        ("shop/pricing.py", 11, 14)
    ]


async def test_context_of_a_function_lists_its_callers_and_callees(
    engine: MemoryEngine, shop: dict[str, str]
) -> None:
    pack = await engine.context(s.ContextRequest(path="shop/pricing.py", symbol="total_price"))
    callees = [(e.symbol, e.path, e.start_line) for e in reasons(pack, "callee")]
    [caller] = reasons(pack, "caller")
    assert callees == [("apply_discount", "shop/pricing.py", 6), ("tax_for", "shop/tax.py", 11)]
    assert (caller.symbol, caller.path, caller.start_line, caller.end_line) == (
        "Checkout.pay",
        "shop/checkout.py",
        12,
        15,
    )
    assert "total_price(cart.items" in caller.text
    assert pack.namespace == "shop"


async def test_context_of_a_method_in_a_class_chunked_whole_is_cut_to_the_method(
    engine: MemoryEngine, shop: dict[str, str]
) -> None:
    pack = await engine.context(s.ContextRequest(symbol="Checkout.pay"))
    [own] = reasons(pack, "symbol")
    assert (own.symbol, own.path, own.start_line, own.end_line) == (
        "Checkout.pay",
        "shop/checkout.py",
        12,
        15,
    )
    assert own.text.lstrip().startswith("def pay(self, cart):")
    assert [e.symbol for e in reasons(pack, "callee")] == ["total_price"]
    assert [e.id for e in reasons(pack, "decision")] == [shop["elsewhere"]]


async def test_context_of_a_name_used_in_a_file_finds_where_it_is_defined(
    engine: MemoryEngine, shop: dict[str, str]
) -> None:
    pack = await engine.context(s.ContextRequest(path="shop/pricing.py", symbol="tax_for"))
    assert [(e.symbol, e.path) for e in reasons(pack, "symbol")] == [("tax_for", "shop/tax.py")]
    assert [e.id for e in reasons(pack, "decision")] == [shop["by_path"]]  # the file's own
    assert [e.symbol for e in reasons(pack, "callee")] == ["rate_of"]


async def test_context_of_a_file_alone_lists_the_code_that_imports_it(
    engine: MemoryEngine, shop: dict[str, str]
) -> None:
    pack = await engine.context(s.ContextRequest(path="./shop/tax.py"))
    assert [(e.path, e.start_line, e.text) for e in reasons(pack, "caller")] == [
        ("shop/pricing.py", 3, "from shop.tax import tax_for")
    ]
    assert [e.id for e in reasons(pack, "decision")] == [shop["by_module"]]
    assert reasons(pack, "symbol") == []


async def test_context_answers_the_question_and_ranks_sections_in_order(
    engine: MemoryEngine, shop: dict[str, str]
) -> None:
    pack = await engine.context(
        s.ContextRequest(symbol="tax_for", query="how are amounts rounded to cents")
    )
    order = [ORDER.index(e.reason) for e in pack.entries]
    ids = [e.id for e in pack.entries]
    assert order == sorted(order)
    assert len(ids) == len(set(ids))
    assert reasons(pack, "query")
    assert reasons(pack, "symbol")[0].path == "shop/tax.py"
    for e in pack.entries:
        assert e.reason in ORDER and e.id and e.tokens > 0


async def test_context_includes_the_summary_of_the_session_named(
    engine: MemoryEngine, shop: dict[str, str]
) -> None:
    summary = "Halfway through moving tax rounding into shop.tax; tests still red."
    save = s.SessionSaveRequest(session_id="cursor-7", namespace="shop", summary=summary)
    await engine.session_save(save)
    named = await engine.context(
        s.ContextRequest(namespace="shop", path="shop/tax.py", session_id="cursor-7")
    )
    found = await engine.context(s.ContextRequest(symbol="tax_for", session_id="cursor-7"))
    other = await engine.context(s.ContextRequest(symbol="tax_for", session_id="cursor-8"))
    for pack in (named, found):
        assert [(e.id, e.text, e.namespace) for e in reasons(pack, "session")] == [
            ("cursor-7", summary, "shop")
        ]
    assert reasons(other, "session") == []


async def save(engine: MemoryEngine, session_id: str, namespace: str, summary: str) -> None:
    req = s.SessionSaveRequest(session_id=session_id, namespace=namespace, summary=summary)
    await engine.session_save(req)


def sessions(pack: s.ContextPack) -> list[tuple[str, str, str, float]]:
    return [(e.id, e.text, e.namespace, e.score) for e in reasons(pack, "session")]


async def test_context_without_a_session_id_includes_the_latest_session_of_the_namespace(
    engine: MemoryEngine, shop: dict[str, str]
) -> None:
    before = await engine.context(s.ContextRequest(namespace="shop", path="shop/tax.py"))
    await save(engine, "cursor-1", "shop", "Started on tax rounding.")
    await save(engine, "cursor-2", "shop", "Rounding moved; tests still red.")
    await save(engine, "cursor-3", "elsewhere", "Another project, saved last.")
    named = await engine.context(s.ContextRequest(namespace="shop", path="shop/tax.py"))
    by_symbol = await engine.context(s.ContextRequest(symbol="tax_for"))
    await save(engine, "cursor-1", "shop", "Back on tax rounding, now green.")  # saved again
    again = await engine.context(s.ContextRequest(namespace="shop", query="tax rounding"))
    empty = await engine.context(s.ContextRequest(namespace="nothing-saved", query="tax"))
    assert reasons(before, "session") == []
    assert sessions(named) == [("cursor-2", "Rounding moved; tests still red.", "shop", 2.0)]
    assert sessions(by_symbol) == sessions(named)  # the symbol's namespace, not the newest
    assert sessions(again) == [("cursor-1", "Back on tax rounding, now green.", "shop", 2.0)]
    assert reasons(empty, "session") == []


async def test_context_without_namespace_or_symbol_includes_the_latest_session_of_all(
    engine: MemoryEngine, shop: dict[str, str]
) -> None:
    await save(engine, "cursor-1", "shop", "Started on tax rounding.")
    await save(engine, "cursor-9", "elsewhere", "Another project, saved last.")
    pack = await engine.context(s.ContextRequest(query="which project was I on"))
    pinned = await engine.context(s.ContextRequest(symbol="tax_for", session_id="cursor-9"))
    assert sessions(pack) == [("cursor-9", "Another project, saved last.", "elsewhere", 1.0)]
    assert reasons(pinned, "session") == []  # a session named is looked for by its id only


@pytest.mark.parametrize(
    "budget", [1, 12, 40, 100, 250, 4000], ids=["1", "12", "40", "100", "250", "4000"]
)
async def test_context_never_exceeds_the_token_budget(
    engine: MemoryEngine, shop: dict[str, str], budget: int
) -> None:
    req = s.ContextRequest(
        path="shop/pricing.py", symbol="total_price", query="tax", budget_tokens=budget
    )
    pack = await engine.context(req)
    tokenizer = counter()
    counts = [len(tokenizer.encode(e.text, add_special_tokens=False).ids) for e in pack.entries]
    assert [e.tokens for e in pack.entries] == counts
    assert pack.tokens_used == sum(counts) <= budget
    assert pack.budget_tokens == budget
    assert pack.truncated == (bool(pack.dropped) or any(e.truncated for e in pack.entries))
    for e in pack.entries:
        if e.truncated:  # cut at a line boundary: its lines are the item's, from the top
            lines = (await engine.get(s.GetRequest(id=e.id))).text.splitlines()
            kept = e.text.splitlines()
            assert any(lines[i : i + len(kept)] == kept for i in range(len(lines)))
            assert e.end_line - e.start_line + 1 == len(kept) or not e.start_line
    if budget <= 40:
        assert pack.dropped


async def test_context_cuts_the_first_entry_that_does_not_fit_at_a_line_boundary(
    engine: MemoryEngine, shop: dict[str, str]
) -> None:
    whole = await engine.context(s.ContextRequest(path="shop/pricing.py", symbol="total_price"))
    [own] = reasons(whole, "symbol")
    pack = await engine.context(
        s.ContextRequest(path="shop/pricing.py", symbol="total_price", budget_tokens=own.tokens - 1)
    )
    [cut] = reasons(pack, "symbol")
    assert cut.truncated
    assert own.text.startswith(cut.text)
    assert (cut.start_line, cut.end_line) == (11, 11 + len(cut.text.splitlines()) - 1)
    assert pack.tokens_used <= own.tokens - 1


async def test_context_fits_one_reply_when_the_reply_is_small(
    make_settings: Callable[..., MemorySettings], embedder: Embedder, tmp_path: Path
) -> None:
    async with MemoryEngine(make_settings(), embedder=embedder, reply_bytes=1200) as engine:
        await remember(engine, tmp_path / "repo")
        req = s.ContextRequest(symbol="total_price", query="tax", budget_tokens=4000)
        pack = await engine.context(req)
    assert encoded_size(pack) <= 1200
    assert pack.entries and pack.dropped and pack.truncated


@pytest.mark.parametrize(
    ("request_", "names"),
    [
        (s.ContextRequest(), "path, symbol, query"),
        (s.ContextRequest(namespace="shop", budget_tokens=10), "path, symbol, query"),
        (s.ContextRequest(path="/home/me/shop/tax.py"), "path:"),
        (s.ContextRequest(path="C:\\shop\\tax.py"), "path:"),
    ],
    ids=["empty", "only-namespace", "absolute-path", "windows-path"],
)
async def test_context_refuses_a_request_with_nothing_to_go_on(
    engine: MemoryEngine, request_: s.ContextRequest, names: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        await engine.context(request_)
    assert names in str(caught.value)


# ---- over the bus ---------------------------------------------------------------------------


@pytest.fixture
async def agent(settings: Settings) -> AsyncIterator[MemoryAgent]:
    async with running(MemoryAgent(settings)) as agent:
        yield agent


async def test_agent_serves_context_and_answers_an_empty_request_with_400(
    agent: MemoryAgent, bus: Bus, tmp_path: Path
) -> None:
    root = write_repo(tmp_path / "repo")
    await bus.request(
        "memory",
        "index",
        s.IndexRequest(path=str(root), namespace="shop"),
        s.IndexResult,
        timeout=60,
    )
    stored = await bus.request(
        "memory",
        "store",
        s.StoreRequest(text=BY_MODULE, kind="decision", namespace="shop"),
        s.StoreResult,
    )
    req = s.ContextRequest(path="shop/tax.py", symbol="tax_for", budget_tokens=300)
    pack = await bus.request("memory", "context", req, s.ContextPack, timeout=30)
    subject = bus.subjects.endpoint("memory", "context")
    empty = await bus.request_raw(subject, b"{}")
    too_big = await bus.request_raw(subject, codec.encode({"path": "a.py", "budget_tokens": 10**6}))
    assert [e.id for e in reasons(pack, "decision")] == [stored.id]
    assert [e.symbol for e in reasons(pack, "callee")] == ["rate_of"]
    assert pack.tokens_used <= 300
    assert empty.headers["Nats-Service-Error-Code"] == "400"
    assert "path, symbol, query" in empty.headers["Nats-Service-Error"]
    assert too_big.headers["Nats-Service-Error-Code"] == "400"
    assert "`$.budget_tokens`" in too_big.headers["Nats-Service-Error"]
    assert msgspec.json.decode(empty.data)["code"] == 400
