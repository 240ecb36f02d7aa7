"""The base of every adapter to an outside service over httpx: one way to call, fail and wait.

Guarantees of :meth:`Integration.call`: it returns the decoded JSON of a 2xx answer or raises
a :class:`~bus.errors.SophiaError` from the table below; it never waits past the call's
deadline (``Policy.deadline_s``) nor retries more than ``Policy.max_retries`` times; a call
that is not idempotent is retried only when the service provably did not act on it (it was
never sent, or the service answered 429 — rate limits are applied before any work), so a
launch is never sent twice after an ambiguous failure: it raises
:class:`OutcomeUnknownError` instead and the caller reconciles (``infra.gpu`` looks for the
unique name it gave the launch). Every error text is bounded and never carries the key.

How an outside answer maps to Sophia's codes (``bus/errors.py``, DESIGN.md section 3):

=============================================  =====  =========================================
outside                                        ours   why
=============================================  =====  =========================================
400, 422 (bad parameters), other 4xx           400    the request is at fault
401, 403 (key refused, account inactive)       503    our configuration is at fault, not the
                                                      caller's; at start-up it is a ConfigError
404 (object does not exist)                    404    unknown id
429 (after bounded retries)                    429    over the service's limit; Retry-After kept
5xx, dropped connection, non-JSON 2xx          503    the service failed
timeout (after bounded retries)                408    our bounded wait ran out
ambiguous failure of a non-idempotent call     503    :class:`OutcomeUnknownError`
circuit open, client-side limit past deadline  503 /  nothing is sent
                                               429
=============================================  =====  =========================================

A subclass may refine the table for its service's own error codes (:meth:`error_for`).

The resilience parts are shared with the model gateway, not copied: the circuit breaker
(:mod:`adapters.llm.breaker`: opens after ``breaker_failures`` failures in a row, half-opens
after ``breaker_cooldown_s`` and lets one probe through), the jittered backoff that honours
``Retry-After`` (:mod:`adapters.llm.backoff`) and the token bucket (:mod:`bus.ratelimit`). A
``Retry-After`` pauses every call of the integration until it has passed, so one 429 does not
turn into a burst of them.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import anyio
import httpx

from adapters.llm import backoff
from adapters.llm.breaker import Breaker
from bus.errors import (
    BadRequestError,
    ConfigError,
    NotFoundError,
    OverLimitError,
    SophiaError,
    TimeoutError_,
    UnavailableError,
)
from bus.ratelimit import RateLimiter

log = logging.getLogger("sophia.adapters")

#: the limit class every call takes a token from
DEFAULT_LIMIT = "default"
#: the longest a Retry-After may pause every call (a bogus "a day" does not stop us for one)
MAX_PAUSE_S = 300.0


class CredentialsRefusedError(UnavailableError):
    """The service refused our key (401/403): a configuration problem, shown without the key."""


class OutcomeUnknownError(UnavailableError):
    """A call that is not idempotent failed after it was sent: it may have been carried out."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket: ``per_s`` calls a second on average, ``burst`` at once."""

    per_s: float
    burst: int = 1


@dataclass(frozen=True, slots=True)
class Policy:
    """Every bound of an integration; the defaults suit a hosted control-plane API."""

    attempt_timeout_s: float = 20.0
    deadline_s: float = 60.0
    max_retries: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    limits: Mapping[str, Rate] = field(default_factory=lambda: {DEFAULT_LIMIT: Rate(1.0)})


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt: the error to raise if it is the last, and whether to try again."""

    error: SophiaError
    retryable: bool = False  # trying again may help
    sent: bool = True  # the service may have acted on it
    blames_service: bool = False  # counts towards opening the breaker
    retry_after_s: float | None = None


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Integration:
    """Base class of an outside-service adapter; see the module docstring for the guarantees.

    A subclass names its ``service`` and ``key_variable`` (shown in errors), implements
    :meth:`check_credentials` (one cheap authenticated read) and may override
    :meth:`upstream_error` and :meth:`error_for` for its error envelope.
    """

    service: ClassVar[str] = "the outside service"
    key_variable: ClassVar[str] = ""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str],
        policy: Policy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = policy or Policy()
        self.breaker = Breaker(self.policy.breaker_failures, self.policy.breaker_cooldown_s)
        self._limiters = {
            name: RateLimiter(rate.per_s, rate.burst) for name, rate in self.policy.limits.items()
        }
        self._paused_until = 0.0  # monotonic time before which nothing is sent (Retry-After)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=dict(headers),
            timeout=httpx.Timeout(self.policy.attempt_timeout_s),
            transport=transport,
            follow_redirects=False,
        )

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the credentials once. Raises ConfigError when the service refuses the key;
        a service that cannot be reached now is logged and checked again by the next call."""
        try:
            await self.check_credentials()
        except CredentialsRefusedError as exc:
            raise ConfigError(exc.description) from None
        except (UnavailableError, TimeoutError_, OverLimitError) as exc:
            log.warning("integration_unchecked", extra={"service": self.service, "why": str(exc)})

    async def check_credentials(self) -> None:
        """One cheap authenticated read; raises CredentialsRefusedError on a refused key."""
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Integration:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- the one way to call ---------------------------------------------------------------

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        idempotent: bool,
        limits: tuple[str, ...] = (DEFAULT_LIMIT,),
    ) -> Any:
        """Send one request with bounded retries; the decoded JSON of a 2xx answer.

        Raises a SophiaError from the module docstring's table.
        """
        deadline = time.monotonic() + self.policy.deadline_s
        retry = 0
        last: Failure | None = None
        while True:
            if not self.breaker.allow():
                if last is not None:  # this call's own failures opened it: say what they were
                    raise self._final(last, idempotent)
                raise UnavailableError(
                    f"{self.service} is failing: the circuit is open after "
                    f"{self.policy.breaker_failures} failures in a row; it is tried again "
                    "after a cool-down"
                )
            try:
                await self._wait_turn(limits, deadline)
            except OverLimitError:
                self.breaker.abandoned()
                raise
            outcome = await self._attempt(method, path, json)
            if not isinstance(outcome, Failure):
                self.breaker.succeeded()
                return outcome
            self._judge(outcome)
            if not outcome.retryable or (outcome.sent and not idempotent):
                raise self._final(outcome, idempotent)
            wait = None
            if retry < self.policy.max_retries:
                wait = backoff.delay(
                    retry,
                    base_s=self.policy.backoff_base_s,
                    cap_s=self.policy.backoff_max_s,
                    retry_after_s=outcome.retry_after_s,
                    remaining_s=deadline - time.monotonic(),
                )
            if wait is None:
                raise self._final(outcome, idempotent)
            log.info("integration_retry", extra={"service": self.service, "retry": retry + 1})
            await anyio.sleep(wait)
            retry += 1
            last = outcome

    def _judge(self, failure: Failure) -> None:
        if failure.blames_service:
            self.breaker.failed()
        elif failure.sent:
            self.breaker.succeeded()  # the service answered coherently: it is up
        else:
            self.breaker.abandoned()
        if failure.retry_after_s is not None:
            until = time.monotonic() + min(failure.retry_after_s, MAX_PAUSE_S)
            self._paused_until = max(self._paused_until, until)

    def _final(self, failure: Failure, idempotent: bool) -> SophiaError:
        """The error to raise: an ambiguous failure of a non-idempotent call says so."""
        ambiguous = failure.sent and failure.blames_service and not idempotent
        if ambiguous and not isinstance(failure.error, OverLimitError):
            return OutcomeUnknownError(
                f"{failure.error.description}; the request may have been carried out"
            )
        return failure.error

    async def _wait_turn(self, limits: tuple[str, ...], deadline: float) -> None:
        """Wait for the service's pause and a token of every limit class; bounded by
        ``deadline``. Raises OverLimitError when the wait would pass it."""
        for name in limits:
            limiter = self._limiters.get(name)
            while True:
                now = time.monotonic()
                wait = max(self._paused_until - now, limiter.acquire(name) if limiter else 0.0)
                if wait <= 0:
                    break
                if now + wait >= deadline:
                    raise OverLimitError(
                        f"{self.service}: over its rate limit; the next slot is in "
                        f"{wait:.1f} s, past this call's deadline"
                    )
                await anyio.sleep(wait)

    async def _attempt(self, method: str, path: str, body: Any) -> Any:
        """One HTTP exchange: the decoded JSON of a 2xx answer, or a Failure."""
        try:
            response = await self._client.request(method, path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout):
            return Failure(
                UnavailableError(f"{self.service} cannot be reached"),
                retryable=True,
                sent=False,
                blames_service=True,
            )
        except httpx.TimeoutException:
            return Failure(
                TimeoutError_(f"{self.service} did not answer in time"),
                retryable=True,
                blames_service=True,
            )
        except httpx.TransportError:
            return Failure(
                UnavailableError(f"{self.service} dropped the connection"),
                retryable=True,
                blames_service=True,
            )
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                return Failure(
                    UnavailableError(f"{self.service} answered with something that is not JSON"),
                    retryable=True,
                    blames_service=True,
                )
        return self._failure(response)

    def _failure(self, response: httpx.Response) -> Failure:
        status = response.status_code
        code, message = self.upstream_error(response)
        what = f"{self.service} answered {status}" + (f" {code}" if code else "")
        text = f"{what}: {message}" if message else what
        error = self.error_for(status, code, text)
        if status == 429:
            return Failure(
                error or OverLimitError(text),
                retryable=True,
                sent=False,  # refused before any work was done
                blames_service=True,
                retry_after_s=retry_after(response.headers.get("retry-after")),
            )
        if status >= 500:
            return Failure(
                error or UnavailableError(text),
                retryable=True,
                blames_service=True,
                retry_after_s=retry_after(response.headers.get("retry-after")),
            )
        return Failure(error or self._client_error(status, code, text))

    def _client_error(self, status: int, code: str, text: str) -> SophiaError:
        if status in (401, 403):
            key = f" in {self.key_variable}" if self.key_variable else ""
            return CredentialsRefusedError(
                f"{self.service} refused the API key{key} ({code or status}); check or replace it"
            )
        if status == 404:
            return NotFoundError(text)
        return BadRequestError(text)

    # ---- hooks for subclasses --------------------------------------------------------------

    def upstream_error(self, response: httpx.Response) -> tuple[str, str]:
        """(the service's error code, its message) from an error answer; both may be empty."""
        return "", response.reason_phrase

    def error_for(self, status: int, code: str, text: str) -> SophiaError | None:
        """A service-specific error for this answer, or None for the standard table."""
        return None
