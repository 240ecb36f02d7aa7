"""One error root for Sophia, each subclass with a stable code and a safe description.

The hierarchy can be caught at any level::

    SophiaError
    ├── ClientError            4xx: the request is at fault; sending it again changes nothing
    │   ├── BadRequestError    400 (ConfigError: a bad setting)
    │   ├── UnauthorizedError  401
    │   ├── BudgetExceededError 402 (a model call would overshoot a USD budget)
    │   ├── ForbiddenError     403
    │   ├── NotFoundError      404
    │   ├── ConflictError      409
    │   └── PayloadTooLargeError 413
    └── ServerError            5xx: Sophia or a backend failed
        └── InternalError      500

    RetryableError             may pass on a later try (a durable work item is redelivered)
    ├── UnavailableError       503 (a ServerError too)
    │   └── StorageFullError   503: JetStream's storage (a stream's or the server's) is full
    ├── TimeoutError_          408 (a ServerError: a bounded wait of ours ran out)
    └── OverLimitError         429 (a ClientError too: slow down, then retry)

Errors become replies in four places only: the endpoint wrapper (``bus.agent``, service-error
headers), the work consumer (``bus.work``, the dead letter's code and text), the edge
(``edge.web`` and ``edge.mcp``: HTTP status, MCP tool error) and the CLI (``ops.cli``, exit
status). Each of them calls :func:`describe`, which also turns msgspec's decode errors into
400s and anything unexpected into a bare "internal error".

A description is shown to callers and kept in ``$SRV.STATS`` and audit events, so it never
carries secrets, internals, stack traces or the caller's own input (which may be a secret):
:func:`safe_text` bounds every description.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

MAX_DESCRIPTION = 200  # characters: an error text names the problem, it does not quote it

E = TypeVar("E", bound=BaseException)


def first_of(exc: BaseException, kind: type[E]) -> E | None:
    """``exc`` when it is a ``kind``, else the first one inside an exception group, however
    deep (a task group wraps what its tasks raise); None when there is none."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_of(inner, kind)
            if found is not None:
                return found
    return None


def safe_text(text: str) -> str:
    """``text`` on one line and at most :data:`MAX_DESCRIPTION` characters."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_DESCRIPTION else line[: MAX_DESCRIPTION - 1] + "…"


class SophiaError(Exception):
    """Base of every error Sophia reports on purpose.

    ``description`` is shown to callers as-is, so it must never carry secrets,
    internals, stack traces or caller input.
    """

    code: int = 500
    default_description: str = "internal error"

    def __init__(self, description: str | None = None) -> None:
        self.description = safe_text(description or self.default_description)
        super().__init__(self.description)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.description!r})"


class ClientError(SophiaError):
    """The request is at fault (4xx): sending it unchanged gets the same answer."""

    code = 400
    default_description = "bad request"


class ServerError(SophiaError):
    """Sophia or one of its backends failed (5xx)."""

    code = 500
    default_description = "internal error"


class RetryableError(SophiaError):
    """A failure that may pass on a later try; a durable work item raising it is redelivered."""

    code = 503
    default_description = "temporarily failed"


class BadRequestError(ClientError):
    """The request does not fit its schema or its values are not allowed."""

    code = 400
    default_description = "bad request"


class ConfigError(BadRequestError):
    """A setting is missing or has a value that is not allowed."""

    default_description = "bad configuration"


class UnauthorizedError(ClientError):
    code = 401
    default_description = "unauthorized"


class BudgetExceededError(ClientError):
    """A model call's worst-case cost does not fit in a budget (task, project or day).

    The description names the budget and the figures, never the prompt.
    """

    code = 402
    default_description = "budget exceeded"


class ForbiddenError(ClientError):
    code = 403
    default_description = "forbidden"


class NotFoundError(ClientError):
    code = 404
    default_description = "not found"


class ConflictError(ClientError):
    """The change collides with the current state (a concurrent writer, a running stack)."""

    code = 409
    default_description = "conflict"


class PayloadTooLargeError(ClientError):
    code = 413
    default_description = "payload too large"


class OverLimitError(ClientError, RetryableError):
    code = 429
    default_description = "over limit"


class InternalError(ServerError):
    code = 500
    default_description = "internal error"


class UnavailableError(ServerError, RetryableError):
    """The bus, a service or a backend cannot be reached right now."""

    code = 503
    default_description = "unavailable"


class StorageFullError(UnavailableError):
    """JetStream refused a write for want of space; it passes once space returns (503)."""

    default_description = "bus storage is full"


class TimeoutError_(ServerError, RetryableError):
    """A bounded wait ran out (named with a trailing underscore: not the builtin)."""

    code = 408
    default_description = "timeout"


_BY_CODE: dict[int, type[SophiaError]] = {
    cls.code: cls
    for cls in (
        BadRequestError,
        UnauthorizedError,
        BudgetExceededError,
        ForbiddenError,
        NotFoundError,
        TimeoutError_,
        ConflictError,
        PayloadTooLargeError,
        OverLimitError,
        InternalError,
        UnavailableError,
    )
}


def error_from_code(code: int, description: str) -> SophiaError:
    """Rebuild the typed error a service replied with.

    Every code in the table above comes back as its class; another 4xx as a ClientError and
    another 5xx as a ServerError, each keeping the code it was sent with.
    """
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = ClientError if 400 <= code < 500 else ServerError
    err = cls(description)
    if err.code != code:
        err.code = code
    return err


_QUOTES_INPUT = ("Invalid enum value", "Invalid value")


def decode_problem(exc: msgspec.DecodeError) -> str:
    """msgspec's message (it names the field: ``… - at `$.k```), without a value it quoted.

    msgspec quotes what it could not accept (``Invalid enum value 'x' - at `$.kind```); the
    quote is the caller's input, so it is cut out and only the problem and the path stay.
    """
    message = str(exc)
    for problem in _QUOTES_INPUT:
        if message.startswith(problem + " "):
            _, at, path = message.rpartition(" - at `$")
            return problem + (at + path if at else "")
    return message


def describe(exc: BaseException) -> tuple[int, str]:
    """(code, safe text) for any exception: how every reply-translating place sees it.

    Raises nothing; an exception that is neither a SophiaError nor msgspec's is "internal".
    """
    if isinstance(exc, SophiaError):
        return exc.code, exc.description
    if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError):
        return 400, safe_text(decode_problem(exc))
    if isinstance(exc, RecursionError):
        return 400, "body: nested too deeply"
    return 500, InternalError.default_description
