"""Declaring handlers: ``@endpoint`` for request/reply, ``@work`` for durable work items.

A handler is an async method taking one ``msgspec.Struct`` (or a tagged union of
them) and returning a Struct (``None`` for work). The routing table is built once
per class; a bad signature raises TypeError naming ``Class.method``.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, Union, get_type_hints

import msgspec

from bus.subjects import is_dotted, is_token

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: a bound endpoint handler: its typed request in, its typed reply out
EndpointHandler = Callable[[Any], Awaitable[msgspec.Struct]]
#: a bound durable-work handler: one typed item in, nothing out (it is acked after)
WorkHandler = Callable[[Any], Awaitable[None]]

_ENDPOINT_ATTR = "__sophia_endpoint__"
_WORK_ATTR = "__sophia_work__"


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One request/reply endpoint of an agent, as registered with the service API."""

    method: str  # attribute name on the agent
    name: str  # service-API endpoint name (no dots)
    subject_tail: str  # after "<prefix>.<service>."; may be dotted
    request_type: Any
    reply_type: Any
    public: bool
    description: str
    access: str = ""  # "read": the endpoint changes nothing (scopes like memory:read reach it)

    def metadata(self) -> dict[str, str]:
        """Service-API metadata: schemas JSON-encoded, since metadata values are strings."""
        metadata = {
            "request_schema": json.dumps(msgspec.json.schema(self.request_type), sort_keys=True),
            "response_schema": json.dumps(msgspec.json.schema(self.reply_type), sort_keys=True),
            "description": self.description,
            "public": "true" if self.public else "false",
        }
        if self.access:
            metadata["access"] = self.access
        return metadata


@dataclass(frozen=True, slots=True)
class WorkSpec:
    """The durable-work handler of an agent (one per agent: one consumer per service)."""

    method: str
    item_type: Any


ACCESS_KINDS = ("", "read")


def endpoint(
    fn: F | None = None, *, subject: str | None = None, public: bool = False, access: str = ""
) -> Any:
    """Mark an async method as a request/reply endpoint.

    ``subject`` is the part after ``sophia.<service>.`` (default: the method name);
    it may be dotted (``session.save``). ``public`` endpoints become edge tools.
    ``access="read"`` declares that the endpoint changes nothing: a token scoped
    ``<service>:read`` reaches it, and its tool is marked read-only.
    """
    if access not in ACCESS_KINDS:
        raise TypeError(f"endpoint access {access!r}: must be '' or 'read'")

    def mark(f: F) -> F:
        setattr(f, _ENDPOINT_ATTR, (subject, public, access))
        return f

    return mark(fn) if fn is not None else mark


def work(fn: F) -> F:
    """Mark an async method as the agent's durable-work handler."""
    setattr(fn, _WORK_ATTR, True)
    return fn


def _is_struct_type(tp: Any) -> bool:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return True
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return all(_is_struct_type(arg) for arg in typing.get_args(tp))
    return False


def _signature_types(cls: type, attr: str, fn: Callable[..., Any]) -> tuple[Any, Any]:
    where = f"{cls.__name__}.{attr}"
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{where}: a handler must be an `async def` method")
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 2 or params[1].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"{where}: a handler takes exactly one argument besides self")
    try:
        hints = get_type_hints(fn)
    except Exception as exc:  # unresolvable forward references
        raise TypeError(f"{where}: cannot resolve type hints ({exc})") from None
    request_type = hints.get(params[1].name)
    if request_type is None or not _is_struct_type(request_type):
        raise TypeError(f"{where}: the argument must be annotated with a msgspec.Struct type")
    if "return" not in hints:
        raise TypeError(f"{where}: the return type must be annotated")
    return request_type, hints["return"]


def _endpoint_spec(cls: type, attr: str, fn: Callable[..., Any]) -> EndpointSpec:
    subject, public, access = getattr(fn, _ENDPOINT_ATTR)
    request_type, reply_type = _signature_types(cls, attr, fn)
    where = f"{cls.__name__}.{attr}"
    if not _is_struct_type(reply_type):
        raise TypeError(f"{where}: the return type must be a msgspec.Struct type")
    tail = subject or attr
    if not is_dotted(tail):
        raise TypeError(f"{where}: subject {tail!r} must be tokens of letters, digits, '_', '-'")
    name = tail.replace(".", "_")
    if not is_token(name):
        raise TypeError(f"{where}: endpoint name {name!r} is not allowed")
    doc = inspect.cleandoc(fn.__doc__ or "").strip()
    return EndpointSpec(attr, name, tail, request_type, reply_type, public, doc, access)


def collect(cls: type) -> tuple[dict[str, EndpointSpec], WorkSpec | None]:
    """Build the routing table of ``cls``. Raises TypeError naming a bad handler."""
    endpoints: dict[str, EndpointSpec] = {}
    work_spec: WorkSpec | None = None
    for klass in reversed(cls.__mro__):
        for attr, fn in vars(klass).items():
            if hasattr(fn, _ENDPOINT_ATTR):
                spec = _endpoint_spec(cls, attr, fn)
                clash = [e for e in endpoints.values() if e.name == spec.name and e.method != attr]
                if clash:
                    raise TypeError(f"{cls.__name__}.{attr}: endpoint name {spec.name!r} taken")
                endpoints[attr] = spec
            elif hasattr(fn, _WORK_ATTR):
                item_type, ret = _signature_types(cls, attr, fn)
                if ret not in (None, type(None)):
                    raise TypeError(f"{cls.__name__}.{attr}: a work handler returns None")
                if work_spec is not None and work_spec.method != attr:
                    raise TypeError(f"{cls.__name__}.{attr}: an agent has one @work handler")
                work_spec = WorkSpec(attr, item_type)
    return endpoints, work_spec
