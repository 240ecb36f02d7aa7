"""One model attempt through the ``portkey-ai`` SDK: one code path for every transport.

- direct: the SDK's ``base_url`` is the model's own OpenAI-compatible server (Ollama, vLLM,
  llama.cpp's server, LM Studio, any ``/v1``), its key sent as ``Authorization``;
- a self-hosted Portkey gateway (``PORTKEY_GATEWAY_URL``) or hosted Portkey
  (``PORTKEY_API_KEY``): ``base_url`` is the gateway, the model's ``provider`` slug, virtual
  key or ``custom_host`` (its ``base_url``) say where the gateway goes on.

``base_url`` is always passed explicitly: the SDK reads no ``PORTKEY_BASE_URL`` variable.

Guarantee: an attempt either returns a :class:`Completion` whose stream ended with its final
chunk, or raises :class:`AttemptError` saying what went wrong (outcome, HTTP status, the
server's ``Retry-After``). The SDK must not retry on its own, since the gateway budgets every
attempt and sends each retry with a fresh cache-refresh header: portkey-ai 2.3.x fixes its
vendored OpenAI client at ``max_retries=1`` with no public way to change it, and that client
retries a 5xx unless the response carries one of Portkey's gateway headers (a gateway in
front has retried already). So the HTTP client we hand the SDK (its public ``http_client``
argument) marks every response ``x-should-retry: false`` and every 5xx
``x-portkey-gateway-exception: retried-by-sophia`` — which is the truth: our gateway does the
retrying. Each attempt also runs under our own timeout, which ends the SDK's one retry after
a timed-out read before it is sent. One case stays out of our hands: after a connection error
(refused, or dropped before a non-streamed body was complete) the SDK sends the request once
more on its own, within the attempt's timeout and without the cache-refresh header; a refused
connection reached no server, but a dropped one may have been billed. Checked against
portkey-ai 2.3.4; the upstream fix to propose is a ``max_retries`` argument on
``AsyncPortkey``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from portkey_ai import AsyncPortkey, openai

from adapters.llm.config import ModelSpec, Transport
from bus.schemas.llm import Outcome

OnDelta = Callable[[str], Awaitable[None]]

#: connections kept per server; attempts beyond wait for one (each model also has a limit)
POOL = httpx.Limits(max_connections=256, max_keepalive_connections=64)


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str
    input_tokens: int | None  # None when the server reported no usage
    output_tokens: int | None
    status: int = 200


class AttemptError(Exception):
    """One attempt failed; ``outcome`` says how, ``retryable`` whether trying again may help."""

    def __init__(
        self,
        outcome: Outcome,
        status: int = 0,
        *,
        retry_after_s: float | None = None,
        partial_tokens: int = 0,
    ) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.status = status
        self.retry_after_s = retry_after_s
        self.partial_tokens = partial_tokens  # output that arrived before it failed

    @property
    def retryable(self) -> bool:
        return self.outcome in {
            "rate_limited",
            "server_error",
            "timeout",
            "unreachable",
            "cut_stream",
        }

    @property
    def blames_provider(self) -> bool:
        """Whether this says the provider is unwell (what a circuit breaker counts)."""
        return self.retryable


async def _no_sdk_retry(response: httpx.Response) -> None:
    """Tell the SDK's client not to retry this response on its own (see the module doc)."""
    response.headers["x-should-retry"] = "false"
    if response.status_code >= 500 and "x-portkey-gateway-exception" not in response.headers:
        response.headers["x-portkey-gateway-exception"] = "retried-by-sophia"


@dataclass(frozen=True, slots=True)
class Call:
    """What one attempt sends (the gateway builds it; retries differ in ``headers``)."""

    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    response_format: dict[str, Any] | None
    headers: dict[str, str]


class Transports:
    """The SDK clients, one per model, over one pooled HTTP client."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._http = httpx.AsyncClient(limits=POOL, event_hooks={"response": [_no_sdk_retry]})
        self._clients: dict[str, AsyncPortkey] = {}

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._http.aclose()

    def client(self, spec: ModelSpec) -> AsyncPortkey:
        found = self._clients.get(spec.name)
        if found is None:
            found = self._clients[spec.name] = AsyncPortkey(**self.sdk_arguments(spec))
        return found

    def sdk_arguments(self, spec: ModelSpec) -> dict[str, Any]:
        """What ``AsyncPortkey`` is given for ``spec`` on this transport (keys included)."""
        arguments: dict[str, Any] = {"http_client": self._http}
        if spec.api_key:
            arguments["Authorization"] = spec.api_key
        if self.transport.kind == "direct":
            return {**arguments, "base_url": spec.base_url, "api_key": "direct"}
        arguments["base_url"] = self.transport.base_url
        if self.transport.portkey_api_key:
            arguments["api_key"] = self.transport.portkey_api_key
        if spec.virtual_key:
            return {**arguments, "virtual_key": spec.virtual_key}
        arguments["provider"] = spec.provider
        if spec.base_url:
            arguments["custom_host"] = spec.base_url
        return arguments

    async def attempt(
        self, spec: ModelSpec, call: Call, *, timeout_s: float, on_delta: OnDelta | None
    ) -> Completion:
        """Send one attempt; the whole of it, stream included, ends within ``timeout_s``.

        Raises AttemptError.
        """
        arguments: dict[str, Any] = {
            "model": spec.upstream_model,
            "messages": call.messages,
            "max_tokens": call.max_tokens,
            "temperature": call.temperature,
            "extra_headers": call.headers,
            "timeout": timeout_s,
        }
        if call.response_format is not None:
            arguments["response_format"] = call.response_format
        try:
            with anyio.fail_after(timeout_s):
                if on_delta is None:
                    return await self._whole(spec, arguments)
                return await self._streamed(spec, arguments, on_delta)
        except TimeoutError:
            raise AttemptError("timeout") from None
        except openai.APIStatusError as exc:
            raise _status_error(exc) from None
        except openai.APITimeoutError:
            raise AttemptError("timeout") from None
        except (openai.APIConnectionError, httpx.TransportError):
            raise AttemptError("unreachable") from None
        except ValueError:  # a 200 whose body is not a completion (JSON or fields)
            raise AttemptError("server_error", 200) from None

    async def _whole(self, spec: ModelSpec, arguments: dict[str, Any]) -> Completion:
        reply = await self.client(spec).chat.completions.create(**arguments)
        choices = getattr(reply, "choices", None) or []
        if not choices:
            raise AttemptError("server_error", 200)
        usage = getattr(reply, "usage", None)
        return Completion(
            text=choices[0].message.content or "",
            finish_reason=choices[0].finish_reason or "",
            input_tokens=getattr(usage, "prompt_tokens", None),
            output_tokens=getattr(usage, "completion_tokens", None),
        )

    async def _streamed(
        self, spec: ModelSpec, arguments: dict[str, Any], on_delta: OnDelta
    ) -> Completion:
        stream = await self.client(spec).chat.completions.create(
            **arguments, stream=True, stream_options={"include_usage": True}
        )
        parts: list[str] = []
        finish, usage = "", None
        try:
            async for chunk in stream:
                usage = getattr(chunk, "usage", None) or usage
                for choice in getattr(chunk, "choices", None) or []:
                    text = getattr(choice.delta, "content", None) if choice.delta else None
                    if text:
                        parts.append(text)
                        await on_delta(text)
                    finish = choice.finish_reason or finish
        except (openai.APIError, httpx.HTTPError, ValueError):
            raise AttemptError("cut_stream", 200, partial_tokens=len(parts)) from None
        if not finish:
            raise AttemptError("cut_stream", 200, partial_tokens=len(parts))
        return Completion(
            text="".join(parts),
            finish_reason=finish,
            input_tokens=getattr(usage, "prompt_tokens", None),
            output_tokens=getattr(usage, "completion_tokens", None),
        )


def _status_error(exc: openai.APIStatusError) -> AttemptError:
    status = exc.status_code
    if status == 429:
        return AttemptError("rate_limited", status, retry_after_s=_retry_after(exc.response))
    if status >= 500 or status == 408:
        outcome: Outcome = "timeout" if status in (408, 504) else "server_error"
        return AttemptError(outcome, status, retry_after_s=_retry_after(exc.response))
    return AttemptError("client_error", status)


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
