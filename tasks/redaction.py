"""Secrets out of task records: every text a record holds is redacted before it is stored.

A record carries what models and tools said — a plan step's description, review findings and
their evidence, bandit's and pytest's messages, edit errors quoting the file — and any of it
can hold a secret from the repository or the goal. The record is stored in the tasks bucket,
told in events, returned by ``tasks.get``/``wait`` and shown by ``sophia task show``, so it is
redacted once, where every writer's change passes (:meth:`tasks.store.TaskStore.change`).

Guarantee: :func:`redact_record` replaces secrets in every string of the record (dictionary
keys excepted: they are field names and timing names from the code) with
:func:`memory.redact.redact`'s markers and changes nothing else; identifiers redaction keeps
(commit shas, task ids, paths, branch names) come back as they were. A record without
secrets is returned as the same object.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bus.schemas.tasks import TaskRecord
from memory.redact import redact


def _strings(value: Any) -> tuple[Any, int]:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        cleaned = [_strings(item) for item in value]
        return [c for c, _ in cleaned], sum(n for _, n in cleaned)
    if isinstance(value, dict):
        pairs = {key: _strings(item) for key, item in value.items()}
        return {key: c for key, (c, _) in pairs.items()}, sum(n for _, n in pairs.values())
    return value, 0


def redact_record(record: TaskRecord) -> TaskRecord:
    """``record`` with every secret in its text replaced; the same object when none is."""
    clean, count = _strings(msgspec.to_builtins(record))
    return msgspec.convert(clean, TaskRecord) if count else record
