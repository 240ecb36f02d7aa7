"""A client's default namespace: where the memory calls that name none go.

Memory keeps items apart by namespace (code indexed from a directory lives under the
directory's name), and its endpoints each have a default when a request names none. A client
may set its own: ``sophia mcp --namespace NAME`` (or ``SOPHIA_NAMESPACE``), ``?namespace=NAME``
on the MCP URL, or the ``Sophia-Namespace`` header on either HTTP surface (the query wins).

Guarantee: a call to a memory endpoint whose request has a ``namespace`` field and leaves it
out gets the client's namespace, when the client has one; a request that names its namespace
keeps it, and so does one that sets it to null (a search over every namespace). Nothing else
about a request changes, and without a client namespace nothing changes at all.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from starlette.datastructures import Headers
from starlette.types import Scope

from bus.errors import BadRequestError
from bus.limits import NAMESPACE_CHARS
from edge.catalog import Endpoint

FIELD = "namespace"
HEADER = "sophia-namespace"
QUERY = "namespace"
SERVICE = "memory"  # the service whose ``namespace`` fields mean memory namespaces
WHERE_SET = (
    "`sophia mcp --namespace NAME`, `?namespace=NAME` on the MCP URL, "
    "or the `Sophia-Namespace` header"
)


def check_namespace(value: str, what: str = "namespace") -> str:
    """``value`` when it can be a client's namespace ("" is none). Raises BadRequestError."""
    if len(value) > NAMESPACE_CHARS or (value and not value.strip()):
        raise BadRequestError(f"{what}: must be at most {NAMESPACE_CHARS} characters, not blank")
    return value


def takes_namespace(endpoint: Endpoint) -> bool:
    """Whether ``endpoint``'s requests name a memory namespace (a top-level ``namespace``)."""
    return endpoint.service == SERVICE and FIELD in endpoint.tool_schema.get("properties", {})


def with_namespace(endpoint: Endpoint, args: Any, namespace: str) -> Any:
    """``args`` with the client's ``namespace`` where the request leaves it out; ``args``
    itself (the same object) when nothing changes."""
    if not namespace or not isinstance(args, dict) or FIELD in args:
        return args
    if not takes_namespace(endpoint):
        return args
    return {**args, FIELD: namespace}


def client_namespace(scope: Scope) -> str:
    """The namespace an HTTP request sets for itself: ``?namespace=``, else the
    ``Sophia-Namespace`` header; "" when neither does. Raises BadRequestError when either is
    not a namespace (the header too when the query wins: the request broke its contract)."""
    header = check_namespace(Headers(scope=scope).get(HEADER, ""), "Sophia-Namespace")
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get(QUERY)
    if values:
        return check_namespace(values[-1], "?namespace")
    return header


def namespace_note(endpoint: Endpoint, namespace: str = "") -> str:
    """One or two sentences on namespaces for ``endpoint``'s description, as a client whose
    namespace is ``namespace`` ("" for none) sees it; "" when the endpoint takes none."""
    if not takes_namespace(endpoint):
        return ""
    field = endpoint.tool_schema["properties"][FIELD]
    options = field.get("anyOf", [field])
    nullable = any(isinstance(o, dict) and o.get("type") == "null" for o in options)
    first = (
        "Namespaces: memory keeps items apart by namespace; code indexed from a directory lives "
        "under the directory's name."
    )
    default = field.get("default")
    if namespace:
        if nullable:
            escape = "; null covers every namespace"
        else:
            escape = "; an empty one is the endpoint's own default" if default == "" else ""
        return (
            f"{first} Without `namespace` this uses the client's namespace, {namespace!r}{escape}."
        )
    if nullable or default is None:
        own = "covers every namespace"
    elif default:
        own = f"uses {default!r}"
    else:
        own = "uses the endpoint's own default"
    return f"{first} Without `namespace` this {own}, unless the client set one ({WHERE_SET})."


def described(endpoint: Endpoint, namespace: str = "") -> str:
    """``endpoint``'s description with its :func:`namespace_note`, if it has one."""
    base = endpoint.description or f"{endpoint.service} {endpoint.name}"
    note = namespace_note(endpoint, namespace)
    return f"{base}\n\n{note}" if note else base
