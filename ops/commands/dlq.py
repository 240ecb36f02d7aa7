"""``sophia dlq ls | show ID | replay ID | purge``: the dead letters of this install.

ID is the letter's sequence in the DLQ stream (the first column of ``ls``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import msgspec

from bus.config import Settings, load
from ops.cli import run_async
from ops.deadletters import DeadLetters, Entry
from ops.render import pretty_json, table
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
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    ls.set_defaults(func=lambda a: run_async(_ls, load(Settings), a))
    show = verbs.add_parser("show", help="print one whole dead letter as JSON")
    show.add_argument("id", type=int, help="DLQ stream sequence")
    show.set_defaults(func=lambda a: run_async(_show, load(Settings), a))
    replay = verbs.add_parser("replay", help="republish to the original subject, then delete")
    replay.add_argument("id", type=int, help="DLQ stream sequence")
    replay.set_defaults(func=lambda a: run_async(_replay, load(Settings), a))
    purge = verbs.add_parser("purge", help="delete every dead letter")
    purge.add_argument("--service", help="only this service's letters")
    purge.set_defaults(func=lambda a: run_async(_purge, load(Settings), a))


async def _ls(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        entries, total = await DeadLetters(bus.js, bus.subjects).entries(args.service, args.limit)
    if args.json:
        print(pretty_json([_summary(e) for e in entries]))
        return 0
    if not entries:
        print("no dead letters")
        return 0
    rows = (_row(e) for e in entries)
    print(table(("ID", "SERVICE", "SUBJECT", "DELIVERIES", "CODE", "FAILED AT", "ERROR"), rows))
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
    }


def _row(entry: Entry) -> tuple[Any, ...]:
    letter = entry.letter
    if letter is None:
        return (entry.id, None, entry.subject, None, None, None, "(not a dead letter)")
    error = letter.error if len(letter.error) <= ERROR_WIDTH else letter.error[:59] + "…"
    failed = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.failed_at))
    return (entry.id, letter.service, letter.subject, letter.deliveries, letter.code, failed, error)


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        letter = await DeadLetters(bus.js, bus.subjects).get(args.id)
    print(pretty_json({"id": args.id, **msgspec.to_builtins(letter)}))
    return 0


async def _replay(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        letter, ack = await DeadLetters(bus.js, bus.subjects).replay(args.id)
    print(f"replayed {args.id} to {letter.subject} ({ack.stream} seq {ack.seq}); removed it")
    return 0


async def _purge(settings: Settings, args: argparse.Namespace) -> int:
    async with open_bus(settings) as bus:
        count = await DeadLetters(bus.js, bus.subjects).purge(args.service)
    which = f" of {args.service}" if args.service else ""
    print(f"purged {count} dead letter{'s' if count != 1 else ''}{which}")
    return 0
