"""``sophia dlq ls | show ID | replay ID | purge``: the dead letters of this install.

ID is the letter's sequence in the DLQ stream (the first column of ``ls``). A letter whose
payload was too large to keep whole is marked truncated (``ls`` and ``show`` say so, with
the original size); ``replay`` refuses it (exit 2) rather than send a cut payload.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import msgspec

from bus.config import Settings, load
from bus.schemas.common import DeadLetter
from ops.cli import run_async, whole
from ops.deadletters import DeadLetters, Entry, original_size
from ops.render import pretty_json, size, table
from ops.session import open_bus

ERROR_WIDTH = 60


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dlq",
        help="list, show, replay or purge dead letters",
        description="Work items that exhausted their deliveries or were refused.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = verbs.add_parser("ls", help="list dead letters, oldest first")
    ls.add_argument("--service", help="only this service's letters")
    ls.add_argument("--limit", type=whole, default=100, help="at most this many (default 100)")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    ls.set_defaults(func=lambda a: run_async(_ls, load(Settings), a))
    show = verbs.add_parser("show", help="print one whole dead letter as JSON")
    show.add_argument("id", type=whole, help="DLQ stream sequence")
    show.set_defaults(func=lambda a: run_async(_show, load(Settings), a))
    replay = verbs.add_parser("replay", help="republish to the original subject, then delete")
    replay.add_argument("id", type=whole, help="DLQ stream sequence")
    replay.set_defaults(func=lambda a: run_async(_replay, load(Settings), a))
    purge = verbs.add_parser("purge", help="delete every dead letter")
    purge.add_argument("--service", help="only this service's letters")
    purge.set_defaults(func=lambda a: run_async(_purge, load(Settings), a))


async def _ls(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        entries, total = await DeadLetters(bus).entries(args.service, args.limit)
    if args.json:
        print(pretty_json([_summary(e) for e in entries]))
        return 0
    if not entries:
        print("no dead letters")
        return 0
    rows = (_row(e) for e in entries)
    headers = ("ID", "SERVICE", "SUBJECT", "DELIVERIES", "CODE", "FAILED AT", "PAYLOAD", "ERROR")
    print(table(headers, rows))
    if total > len(entries):
        print(f"… {total - len(entries)} more (--limit)")
    return 0


def _summary(entry: Entry) -> dict[str, Any]:
    letter = entry.letter
    if letter is None:
        return {"id": entry.id, "dlq_subject": entry.subject, "error": "not a dead letter"}
    return {
        "id": entry.id,
        "service": letter.service,
        "subject": letter.subject,
        "deliveries": letter.deliveries,
        "code": letter.code,
        "error": letter.error,
        "failed_at": letter.failed_at,
        "truncated": letter.truncated,
        "payload_bytes": original_size(letter),
    }


def _row(entry: Entry) -> tuple[Any, ...]:
    letter = entry.letter
    if letter is None:
        return (entry.id, None, entry.subject, None, None, None, None, "(not a dead letter)")
    error = letter.error if len(letter.error) <= ERROR_WIDTH else letter.error[:59] + "…"
    failed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.failed_at))
    return (
        entry.id,
        letter.service,
        letter.subject,
        letter.deliveries,
        letter.code,
        failed,
        _payload_cell(letter),
        error,
    )


def _payload_cell(letter: DeadLetter) -> str:
    """``512B``, or ``2.0MiB truncated`` for a letter that kept only part of it."""
    shown = size(original_size(letter))
    return f"{shown} truncated" if letter.truncated else shown


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        letter = await DeadLetters(bus).get(args.id)
    print(pretty_json({"id": args.id, **msgspec.to_builtins(letter)}))
    if letter.truncated:
        print(
            f"dead letter {args.id} is truncated: its payload was {letter.payload_bytes} bytes "
            "and it keeps only the start (base64); it cannot be replayed",
            file=sys.stderr,
        )
    return 0


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        letter, ack = await DeadLetters(bus).replay(args.id)
    print(f"replayed {args.id} to {letter.subject} ({ack.stream} seq {ack.seq}); removed it")
    return 0


async def _purge(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        count = await DeadLetters(bus).purge(args.service)
    which = f" of {args.service}" if args.service else ""
    print(f"purged {count} dead letter{'s' if count != 1 else ''}{which}")
    return 0
