"""Engine events as Sophia sees them: progress lines, change counts, failure text — all masked.

The Pulumi engine reports each step (``resourcePreEvent``, ``resOutputsEvent``,
``resOpFailedEvent``), diagnostics and a closing ``summaryEvent``. :class:`EventDigest` keeps
what a reply, an audit event or a progress report may say: the step's operation, the
resource's type and name, counts per operation, and error diagnostics — every text passed
through a :class:`Redactor` first, so a secret value a provider quoted in an error never
leaves the agent. Property values of resources are never read at all.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from pulumi.automation import EngineEvent

from bus.errors import safe_text
from bus.schemas.infra import SECRET_MASK

MIN_SECRET_CHARS = 4  # shorter "secrets" (a flag, a port) would mask half of every message
MAX_ERRORS = 3


class Redactor:
    """Replaces every known secret value in a text by ``[secret]``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        found = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS}
        # longest first, so a secret that contains another is masked whole
        self._secrets = sorted(set(self._secrets) | found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, SECRET_MASK)
        return text


def resource_name(urn: str) -> str:
    """The last part of a URN (``urn:pulumi:dev::proj::type::name`` → ``name``)."""
    return urn.rsplit("::", 1)[-1] if urn else ""


class EventDigest:
    """What one operation's engine events add up to; fed from Pulumi's event thread."""

    def __init__(self, redact: Redactor) -> None:
        self.redact = redact
        self.steps = 0
        self.changes: dict[str, int] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def take(self, event: EngineEvent) -> str | None:
        """Count ``event``; return the progress line it deserves, if any."""
        with self._lock:
            if event.resource_pre_event is not None:
                meta = event.resource_pre_event.metadata
                self.steps += 1
                return self.redact(f"{meta.op.value} {meta.type} {resource_name(meta.urn)}")
            if event.res_op_failed_event is not None:
                meta = event.res_op_failed_event.metadata
                return self.redact(f"failed {meta.op.value} {meta.type} {resource_name(meta.urn)}")
            if event.diagnostic_event is not None and event.diagnostic_event.severity == "error":
                text = safe_text(self.redact(event.diagnostic_event.message))
                if len(self.errors) < MAX_ERRORS:
                    self.errors.append(text)
                return f"error: {text}"
            if event.summary_event is not None:
                self.changes = {
                    str(k): int(v) for k, v in event.summary_event.resource_changes.items()
                }
                return "done: " + ", ".join(f"{k} {v}" for k, v in sorted(self.changes.items()))
            return None

    def failure(self) -> str:
        """The first error diagnostics, masked and bounded."""
        return safe_text("; ".join(self.errors)) if self.errors else ""
