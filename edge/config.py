"""Edge settings (``SOPHIA_EDGE_*``), their bounds declared on the fields (see bus.config).

The bind address itself is the core ``SOPHIA_EDGE_BIND`` (:class:`bus.config.Settings`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from bus.config import Count
from bus.limits import NAMESPACE_CHARS

#: a number of seconds the edge waits or polls: more than 0, at most an hour
Interval = Annotated[float, msgspec.Meta(gt=0, le=3600)]


def split_list(value: str) -> list[str]:
    """A comma-separated setting as a list of its non-empty items."""
    return [item.strip() for item in value.split(",") if item.strip()]


class EdgeSettings(msgspec.Struct, kw_only=True, frozen=True):
    """What the edge allows and how it finds tools."""

    edge_cors_origins: str = ""  # comma-separated origins; empty: no CORS, Origin refused
    edge_max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 * 1_048_576)] = 1_048_576
    edge_rate_per_s: Annotated[float, msgspec.Meta(gt=0)] = 20.0  # per token, per replica
    edge_rate_burst: Count = 40
    edge_call_timeout_s: Interval = 60.0
    edge_discovery_s: Interval = 2.0  # how often $SRV.INFO is polled
    edge_discovery_window_s: Interval = 0.25  # how long replies are gathered per poll
    edge_tools: Annotated[
        str,
        msgspec.Meta(pattern=r"[^,\s]", description="must name at least one pattern ('*' for all)"),
    ] = "*"  # comma-separated tool-name patterns every MCP client is limited to
    edge_max_streams: Count = 1000  # open MCP event streams per replica
    edge_keepalive_s: Interval = 15.0

    def __post_init__(self) -> None:
        if not self.edge_discovery_window_s < self.edge_discovery_s:
            raise ValueError("edge_discovery_window_s: must be below edge_discovery_s")

    @property
    def cors_origins(self) -> list[str]:
        return split_list(self.edge_cors_origins)

    @property
    def tool_patterns(self) -> list[str]:
        return split_list(self.edge_tools)


class ClientSettings(msgspec.Struct, kw_only=True, frozen=True):
    """What ``sophia mcp`` reads for its one client besides the edge settings
    (``SOPHIA_NAMESPACE``, or ``namespace`` in the ``[mcp]`` table of ``sophia.toml``)."""

    namespace: Annotated[
        str,
        msgspec.Meta(
            max_length=NAMESPACE_CHARS,
            pattern=r"^$|\S",
            description=f"must be at most {NAMESPACE_CHARS} characters, not blank",
        ),
    ] = ""  # the client's default memory namespace; empty: each endpoint's own default
