"""The MCP envelope decoder refuses what it cannot take with a JSON-RPC error, never a crash."""

from __future__ import annotations

import pytest

from edge.mcp import jsonrpc
from edge.mcp.jsonrpc import RpcError


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"0" + b"}" * depth


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        (b"", -32700, "parse error: body is not valid JSON"),
        (nested(3_000), -32600, "invalid request: nested too deeply"),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": '
            + nested(jsonrpc.ENVELOPE_NESTING + 1)
            + b"}",
            -32600,
            f"invalid request: params: Objects and arrays nested deeper than"
            f" {jsonrpc.ENVELOPE_NESTING} levels - at `$.a`",
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": '
            b'{"arguments": {"limit": 18446744073709551616}}}',
            -32600,
            "invalid request: params: Integer beyond 64 bits - at `$.arguments`",
        ),
        (
            b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": '
            + nested(3_000)
            + b"}",
            -32600,
            "invalid request: nested too deeply",
        ),
    ],
    ids=[
        "empty",
        "deep-envelope",
        "params-past-the-limit",
        "int-past-64-bits",
        "params-past-recursion",
    ],
)
def test_jsonrpc_decode_refuses_deep_and_broken_bodies(body: bytes, code: int, text: str) -> None:
    with pytest.raises(RpcError) as caught:
        jsonrpc.decode(body)
    assert (caught.value.code, str(caught.value)) == (code, text)


def test_jsonrpc_decode_takes_params_within_the_limit() -> None:
    inner = nested(jsonrpc.ENVELOPE_NESTING - 1)
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "x", "params": ' + inner + b"}"
    assert jsonrpc.decode(body).method == "x"
