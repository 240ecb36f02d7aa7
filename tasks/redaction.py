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

import msgspec

from bus.schemas.tasks import TaskRecord
from memory.redact import redact_value


def redact_record(record: TaskRecord) -> TaskRecord:
    """``record`` with every secret in its text replaced; the same object when none is."""
    clean, count = redact_value(msgspec.to_builtins(record), keys=False)
    return msgspec.convert(clean, TaskRecord) if count else record
