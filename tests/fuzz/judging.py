"""One input's whole treatment, the same on every channel: judge the reply, count it, note an
accepted write for reading back."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.fuzz.inputs import fits
from tests.fuzz.targets import Target
from tests.fuzz.verdicts import Reply, Tally, Writes, judge

#: characters of an offending input shown in a violation
SHOWN = 160


class Judge:
    """Judges the inputs of one test (one endpoint on one channel) and keeps its violations."""

    def __init__(
        self,
        channel: str,
        target: Target,
        schema: dict[str, Any],
        tally: Tally,
        writes: Writes | None,
    ) -> None:
        """``writes``: where accepted writes are noted for reading back (None: the inputs
        are not requests of ``target`` itself, e.g. JSON-RPC envelopes)."""
        self.channel = channel
        self.target = target
        self.schema = schema
        self.tally = tally
        self.writes = writes
        self.fields = _fields(schema)
        self.problems: list[str] = []

    def value(self, value: Any, send: Callable[[Any], Reply]) -> Reply:
        """Send a value (a request as JSON would carry it) and judge its reply."""
        reply = send(value)
        fitting = fits(self.schema, value)
        # a value that is no object has no field to name: the body as a whole is wrong
        self._judge(
            reply,
            fitting,
            value,
            _shown(value),
            body=not isinstance(value, dict),
            own_deadline=_short_deadline(value),
        )
        return reply

    def raw(self, payload: bytes, send: Callable[[bytes], Reply]) -> Reply:
        """Send bytes that may be no request at all and judge the reply."""
        reply = send(payload)
        try:
            request = json.loads(payload)
        except (ValueError, RecursionError):
            request = None
        self._judge(reply, None, request, repr(payload[:SHOWN]), body=True)
        return reply

    def _judge(
        self,
        reply: Reply,
        fitting: bool | None,
        request: Any,
        shown: str,
        *,
        body: bool,
        own_deadline: bool = False,
    ) -> None:
        self.tally.count(self.channel, reply)
        where = f"{self.channel} {self.target.declared.id} <- {shown}"
        broken = judge(
            where=where,
            service=self.target.service,
            reply=reply,
            fits=fitting,
            fields=self.fields,
            body=body,
            own_deadline=own_deadline,
        )
        if broken is not None:
            self.problems.append(broken)
            self.tally.violation(broken)
        if self.writes is not None:
            self.writes.note(self.target.declared.id, request, reply)


def _short_deadline(value: Any) -> bool:
    timeout = value.get("timeout_s") if isinstance(value, dict) else None
    return isinstance(timeout, int | float) and 0 < timeout < 1


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def _fields(schema: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                names.update(props)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names
