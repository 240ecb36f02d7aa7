"""A token budget for context packs, counted with the embedding model's own tokenizer.

Entries are taken in section order (:data:`ORDER`): first the best entry of each section that
fits whole, then every other one that fits, in order; then the first entry left out is cut
after its last line that fits into what is left. What still does not fit is counted, per
reason, as dropped.

Guarantee: a pack's ``tokens_used`` is the sum of its entries' ``tokens``, each the count of
that entry's text, and never exceeds ``budget_tokens``; the pack fits one bus reply.
"""

from __future__ import annotations

import functools
import hashlib

import anyio.to_thread
import msgspec
from tokenizers import Tokenizer

from bus.errors import ConfigError
from bus.schemas.memory import ContextEntry, ContextPack
from memory.budget import ReplyBudget
from memory.embedder import TOKENIZER_PATH, TOKENIZER_SHA256

#: sections in the order the budget fills them: what is at the cursor, the rules recorded for
#: it, where the editor left off, what was asked, then the code around it
ORDER = ("symbol", "decision", "error", "solution", "session", "query", "callee", "caller")
MIN_CUT_TOKENS = 16  # a cut entry shorter than this is noise (unless the budget is smaller)


class TokenCounter:
    """Counts tokens as the embedding model reads them: its packaged WordPiece tokenizer
    (checksum checked), whole texts, no special tokens. Thread-safe.

    WordPiece splits at whitespace first, so texts joined by newlines count as the sum of
    their counts: a text cut at a line boundary is counted line by line.
    """

    def __init__(self) -> None:
        data = TOKENIZER_PATH.read_bytes()
        if hashlib.sha256(data).hexdigest() != TOKENIZER_SHA256:
            raise ConfigError(f"{TOKENIZER_PATH.name}: checksum mismatch, reinstall sophia")
        self._tokenizer = Tokenizer.from_str(data.decode("utf-8"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.name = TOKENIZER_PATH.name.removesuffix(".tokenizer.json") + " wordpiece"

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text."""
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [len(e.ids) for e in encodings]


@functools.cache
def token_counter() -> TokenCounter:
    """The process's one counter (the tokenizer loads once). Raises ConfigError."""
    return TokenCounter()


async def pack(
    entries: list[ContextEntry],
    budget_tokens: int,
    counter: TokenCounter,
    reply: ReplyBudget,
    namespace: str = "",
) -> ContextPack:
    """The pack of ``entries`` (any order, duplicates allowed) within ``budget_tokens`` and
    one ``reply``: see the module docstring."""
    rank = {reason: i for i, reason in enumerate(ORDER)}
    ranked = unique(sorted(entries, key=lambda e: (rank.get(e.reason, len(ORDER)), -e.score)))
    counts = await anyio.to_thread.run_sync(counter.count, [e.text for e in ranked])
    for entry, n in zip(ranked, counts, strict=True):
        entry.tokens = n
    taken, left = _select(ranked, budget_tokens)
    rest = [e for e in ranked if id(e) not in taken]
    cut = None
    if rest and left >= min(MIN_CUT_TOKENS, budget_tokens):
        cut = await anyio.to_thread.run_sync(_cut, rest[0], left, counter)
    kept = [e for e in ranked if id(e) in taken or (cut is not None and e is rest[0])]
    dropped: dict[str, int] = {}
    for entry in rest[1 if cut else 0 :]:
        dropped[entry.reason] = dropped.get(entry.reason, 0) + 1
    result = ContextPack(
        entries=[cut if cut is not None and e is rest[0] else e for e in kept],
        budget_tokens=budget_tokens,
        dropped=dropped,
        namespace=namespace,
        tokenizer=counter.name,
    )
    return _fit(result, reply)


def unique(ranked: list[ContextEntry]) -> list[ContextEntry]:
    """Each item once, in its first place; twins (one file indexed in two namespaces) and
    blank texts left out."""
    seen: set[object] = set()
    kept: list[ContextEntry] = []
    for e in ranked:
        twin = (e.path, e.start_line, e.end_line, e.text)
        if e.id in seen or twin in seen or not e.text.strip():
            continue
        seen.update((e.id, twin))
        kept.append(e)
    return kept


def _select(ranked: list[ContextEntry], budget: int) -> tuple[set[int], int]:
    """The entries (by ``id()``) taken whole, and the tokens left."""
    firsts: dict[str, ContextEntry] = {}
    for e in ranked:
        firsts.setdefault(e.reason, e)
    taken: set[int] = set()
    left = budget
    for e in [*firsts.values(), *ranked]:
        if id(e) not in taken and e.tokens <= left:
            taken.add(id(e))
            left -= e.tokens
    return taken, left


def _cut(entry: ContextEntry, left: int, counter: TokenCounter) -> ContextEntry | None:
    """``entry`` cut after its last line that fits in ``left`` tokens (None: not even one)."""
    lines = entry.text.splitlines()
    keep = used = 0
    for n in counter.count(lines):
        if used + n > left:
            break
        keep, used = keep + 1, used + n
    while keep:
        text = "\n".join(lines[:keep])
        tokens = counter.count([text])[0]  # the sum of its lines': counted again to be sure
        if tokens <= left and text.strip():
            end = entry.start_line + keep - 1 if entry.start_line else 0
            return msgspec.structs.replace(
                entry, text=text, tokens=tokens, end_line=end, truncated=True
            )
        keep -= 1
    return None


def _fit(result: ContextPack, reply: ReplyBudget) -> ContextPack:
    """``result`` less its last entries until it fits one reply, its totals filled in."""
    entries, dropped = list(result.entries), dict(result.dropped)
    while True:
        result = msgspec.structs.replace(
            result,
            entries=entries,
            dropped=dropped,
            tokens_used=sum(e.tokens for e in entries),
            truncated=bool(dropped) or any(e.truncated for e in entries),
        )
        if reply.fits(result) or not entries:
            return result
        gone = entries.pop()
        dropped[gone.reason] = dropped.get(gone.reason, 0) + 1
