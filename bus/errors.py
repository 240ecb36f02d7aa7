"""One error root for Sophia, each subclass with a stable code and a safe description.

Errors are translated in three places only: the bus endpoint wrapper (service-error
headers), the edge (HTTP status / MCP error) and the CLI (exit code).
"""

from __future__ import annotations


class SophiaError(Exception):
    """Base of every error Sophia reports on purpose.

    ``description`` is shown to callers as-is, so it must never carry secrets,
    internals or stack traces.
    """

    code: int = 500
    default_description: str = "internal error"

    def __init__(self, description: str | None = None) -> None:
        self.description = description or self.default_description
        super().__init__(self.description)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.description!r})"


class BadRequestError(SophiaError):
    """The request does not fit its schema or its values are not allowed."""

    code = 400
    default_description = "bad request"


class UnauthorizedError(SophiaError):
    code = 401
    default_description = "unauthorized"


class ForbiddenError(SophiaError):
    code = 403
    default_description = "forbidden"


class NotFoundError(SophiaError):
    code = 404
    default_description = "not found"


class TimeoutError_(SophiaError):
    """A bounded wait ran out (named with a trailing underscore: not the builtin)."""

    code = 408
    default_description = "timeout"


class ConflictError(SophiaError):
    """A concurrent writer kept winning: the change was not applied."""

    code = 409
    default_description = "conflict"


class PayloadTooLargeError(SophiaError):
    code = 413
    default_description = "payload too large"


class OverLimitError(SophiaError):
    code = 429
    default_description = "over limit"


class InternalError(SophiaError):
    code = 500
    default_description = "internal error"


class UnavailableError(SophiaError):
    """The bus, a service or a backend cannot be reached right now."""

    code = 503
    default_description = "unavailable"


class RetryableError(SophiaError):
    """A durable work item failed in a way that may pass on a later delivery."""

    code = 503
    default_description = "temporarily failed"


class ConfigError(SophiaError):
    """A setting is missing or has a value that is not allowed."""

    code = 400
    default_description = "bad configuration"


_BY_CODE: dict[int, type[SophiaError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    408: TimeoutError_,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: OverLimitError,
    500: InternalError,
    503: UnavailableError,
}


def error_from_code(code: int, description: str) -> SophiaError:
    """Rebuild the typed error a service replied with (unknown codes become InternalError)."""
    cls = _BY_CODE.get(code, InternalError)
    err = cls(description)
    err.code = code
    return err
