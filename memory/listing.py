"""memory.list: every item, most recent first, a page at a time.

Pages are keyset pages: a cursor is the (created_at, id) of the last item a page gave, as
base64url JSON, and the next page starts below it. So an item stored while a client pages
never shifts a page (it comes first in a new listing), one deleted meanwhile is simply not
there, and a page costs one walk down an index however deep the client has gone.

Guarantee: an item present from the first page to the last is listed exactly once, in
(created_at, id) descending order, and every page fits one reply.
"""

from __future__ import annotations

import base64
import binascii

import msgspec

from bus.errors import BadRequestError
from bus.schemas import memory as s
from memory.budget import ReplyBudget, encoded_size
from memory.redact import redact_identifier
from memory.tiers.base import Query, Record, RecordStore

_ARRAY_HEADER = 5  # MessagePack's largest array header; JSON needs only "[]"
_BAD_CURSOR = "cursor: not one this endpoint gave"
_position = msgspec.json.Decoder(tuple[float, str])


def cursor_at(created_at: float, item_id: str) -> str:
    """The cursor of the page that follows the item (created_at, item_id)."""
    raw = msgspec.json.encode((created_at, item_id))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def position(cursor: str) -> tuple[float, str] | None:
    """The (created_at, id) a cursor stands for; None for "" (the first page).

    Raises BadRequestError naming ``cursor`` unless :func:`cursor_at` could have made it.
    """
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, item_id = _position.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise BadRequestError(_BAD_CURSOR) from None
    # only the spelling it gives: padding, stray characters or a reformatted JSON are refused
    if cursor_at(created_at, item_id) != cursor:
        raise BadRequestError(_BAD_CURSOR)
    return created_at, item_id


def title(record: Record) -> str:
    """``path:start-end`` for a code chunk; else the first line of its text that has any,
    cut to :data:`~bus.schemas.memory.TITLE_CHARS`."""
    meta = record.metadata
    start, end = meta.get("start_line"), meta.get("end_line")
    if record.kind == "code" and record.path and isinstance(start, int) and isinstance(end, int):
        return f"{record.path}:{start}-{end}"
    line = next((line.strip() for line in record.text.splitlines() if line.strip()), "")
    if len(line) > s.TITLE_CHARS:
        line = line[: s.TITLE_CHARS - 1] + "…"
    return line


def listed(record: Record) -> s.ListedItem:
    return s.ListedItem(
        id=record.id,
        namespace=redact_identifier(record.namespace),  # as stats lists them: stored before checks
        kind=record.kind,
        created_at=record.created_at,
        title=redact_identifier(title(record)),
    )


async def page(store: RecordStore, req: s.ListRequest, budget: ReplyBudget) -> s.ListResult:
    """One page of ``req``: up to ``req.limit`` items, fewer when no more fit one reply.

    Raises BadRequestError naming ``cursor`` (see :func:`position`).
    """
    after = position(req.cursor)
    query = Query(namespace=req.namespace, kinds=list(req.kinds))
    records = await store.list_items(query, after, req.limit + 1)  # one more: is there a next?
    used = encoded_size(s.ListResult(next_cursor="x" * s.CURSOR_CHARS)) + _ARRAY_HEADER
    items: list[s.ListedItem] = []
    for record in records[: req.limit]:
        item = listed(record)
        used += encoded_size(item) + 1  # a comma between items in JSON
        if used > budget.max_bytes and items:  # a stored item's own get fits, so one does
            break
        items.append(item)
    if len(items) == len(records):
        return s.ListResult(items=items)
    last = records[len(items) - 1]
    return s.ListResult(items=items, next_cursor=cursor_at(last.created_at, last.id))
