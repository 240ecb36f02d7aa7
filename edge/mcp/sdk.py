"""The pieces of the ``mcp`` SDK that its packages do not re-export, all in this one module.

Everything else the edge takes from the SDK comes from what ``mcp``, ``mcp.server`` and
``mcp_types`` export at their top level (``Server``, ``ServerRequestContext``,
``stdio_server``, ``MCPError``, the protocol types). Checked against mcp 2.2 and 2.3
(``pyproject.toml``: ``mcp>=2.2,<3``: 2.2 is the first whose stateless transport ends the
handler of a cancelled request; ``make test`` runs the edge suite on both); an upgrade that
moves one of these names fails here, at import, not in a user's session.

- ``StreamableHTTPSessionManager``: the SDK's streamable-HTTP transport, run stateless (a
  fresh transport per request, born initialised), which is what lets any edge replica serve
  any session: the edge keeps the sessions (``edge.mcp.sessions``), the SDK answers each
  message.
- The protocol versions of the two eras: ``MCP-Protocol-Version`` values that go through a
  handshake, and those that carry the 2026-07-28 per-request envelope instead.
"""

from __future__ import annotations

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

__all__ = [
    "HANDSHAKE_PROTOCOL_VERSIONS",
    "MODERN_PROTOCOL_VERSIONS",
    "StreamableHTTPSessionManager",
]
