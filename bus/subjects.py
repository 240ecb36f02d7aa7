"""Every subject, stream, consumer and bucket name Sophia uses, built in one place.

Names are pure functions of the install prefix (``SOPHIA_PREFIX``, default
``sophia``), so several installs can share one NATS. Tokens are checked when a
name is built: a token with a space, a dot or a wildcard raises ValueError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: the one rule for a name that becomes a subject token (a service, an endpoint, a prefix)
TOKEN_PATTERN = r"^[A-Za-z0-9_-]+$"
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_DOTTED = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")

SRV_PREFIX = "$SRV"
JS_API_PREFIX = "$JS.API"
#: where nats-py's inboxes live (its default ``inbox_prefix``): replies and progress
INBOX_PREFIX = "_INBOX."


def is_token(value: str) -> bool:
    """Whether ``value`` is one subject token: letters, digits, ``_`` or ``-``."""
    return _TOKEN.fullmatch(value) is not None


def is_dotted(value: str) -> bool:
    """Whether ``value`` is one or more tokens joined by dots."""
    return _DOTTED.fullmatch(value) is not None


_PUBLISHABLE = re.compile(r"[^\s.*>]+(\.[^\s.*>]+)*")


def is_publishable(subject: str) -> bool:
    """Whether a message may be sent to ``subject``: dot-separated tokens, none empty, with no
    white space and no wildcard (``$SRV.PING`` and ``_INBOX.x`` are publishable)."""
    return len(subject) <= 4096 and _PUBLISHABLE.fullmatch(subject) is not None


def is_inbox(subject: str) -> bool:
    """Whether ``subject`` is a caller's own inbox (``_INBOX.…``): where progress and streamed
    text may go, never another service's subject."""
    return subject.startswith(INBOX_PREFIX) and is_publishable(subject)


def token(value: str, what: str = "token") -> str:
    """Return ``value`` when it is one subject token. Raises ValueError naming ``what``."""
    if not is_token(value):
        raise ValueError(f"{what}: must be letters, digits, '_' or '-'")
    return value


def dotted(value: str, what: str = "name") -> str:
    """Return ``value`` when it is one or more tokens joined by dots. Raises ValueError."""
    if not is_dotted(value):
        raise ValueError(f"{what}: must be tokens of letters, digits, '_' or '-' joined by dots")
    return value


@dataclass(frozen=True, slots=True)
class Subjects:
    """The names one install uses; ``Subjects("sophia")`` gives the documented defaults."""

    prefix: str = "sophia"

    def __post_init__(self) -> None:
        token(self.prefix, "prefix")

    # request/reply
    def endpoint(self, service: str, endpoint: str) -> str:
        """``sophia.<service>.<endpoint>``; the endpoint may be dotted (``session.save``)."""
        return f"{self.prefix}.{token(service, 'service')}.{dotted(endpoint, 'endpoint')}"

    # durable work
    def work(self, service: str) -> str:
        return f"{self.prefix}.work.{token(service, 'service')}"

    @property
    def work_all(self) -> str:
        return f"{self.prefix}.work.>"

    # events
    def event(self, *tokens: str) -> str:
        """``sophia.events.<t1>.<t2>…``, e.g. ``event("task", task_id)``."""
        if not tokens:
            raise ValueError("event: needs at least one token")
        return ".".join((self.prefix, "events", *(token(t, "event token") for t in tokens)))

    @property
    def events_all(self) -> str:
        return f"{self.prefix}.events.>"

    # dead letters
    def dlq(self, service: str) -> str:
        return f"{self.prefix}.dlq.{token(service, 'service')}"

    @property
    def dlq_all(self) -> str:
        return f"{self.prefix}.dlq.>"

    # JetStream names: upper-case prefix for streams, lower-case for buckets
    @property
    def work_stream(self) -> str:
        return f"{self._upper}_WORK"

    @property
    def events_stream(self) -> str:
        return f"{self._upper}_EVENTS"

    @property
    def dlq_stream(self) -> str:
        return f"{self._upper}_DLQ"

    def consumer(self, service: str) -> str:
        """Durable pull consumer of one service on the work stream."""
        return token(service, "service")

    def pull_next(self, service: str) -> str:
        """The JetStream API subject a pull request for ``service``'s work is sent to."""
        return f"{JS_API_PREFIX}.CONSUMER.MSG.NEXT.{self.work_stream}.{self.consumer(service)}"

    @property
    def tasks_bucket(self) -> str:
        return f"{self._lower}_tasks"

    @property
    def budgets_bucket(self) -> str:
        """Model-call budgets (spent and held USD per task, project and UTC day)."""
        return f"{self._lower}_llm_budgets"

    @property
    def sessions_bucket(self) -> str:
        return f"{self._lower}_sessions"

    @property
    def config_bucket(self) -> str:
        return f"{self._lower}_config"

    @property
    def _upper(self) -> str:
        return self.prefix.upper().replace("-", "_")

    @property
    def _lower(self) -> str:
        return self.prefix.lower().replace("-", "_")


def srv(verb: str, name: str | None = None, instance_id: str | None = None) -> str:
    """A NATS service-API control subject: ``$SRV.<VERB>[.<name>[.<id>]]``."""
    if verb not in {"PING", "INFO", "STATS"}:
        raise ValueError(f"verb {verb!r}: must be PING, INFO or STATS")
    parts = [SRV_PREFIX, verb]
    if name is not None:
        parts.append(token(name, "service name"))
        if instance_id is not None:
            parts.append(token(instance_id, "service id"))
    return ".".join(parts)
