"""Edge settings (``SOPHIA_EDGE_*``), validated on construction.

The bind address itself is the core ``SOPHIA_EDGE_BIND`` (:class:`bus.config.Settings`).
"""

from __future__ import annotations

import msgspec


def split_list(value: str) -> list[str]:
    """A comma-separated setting as a list of its non-empty items."""
    return [item.strip() for item in value.split(",") if item.strip()]


class EdgeSettings(msgspec.Struct, kw_only=True, frozen=True):
    """What the edge allows and how it finds tools."""

    edge_cors_origins: str = ""  # comma-separated origins; empty: no CORS, Origin refused
    edge_max_body_bytes: int = 1_048_576
    edge_rate_per_s: float = 20.0  # per token, per replica
    edge_rate_burst: int = 40
    edge_call_timeout_s: float = 60.0
    edge_discovery_s: float = 2.0  # how often $SRV.INFO is polled
    edge_discovery_window_s: float = 0.25  # how long replies are gathered per poll
    edge_tools: str = "*"  # comma-separated tool-name patterns every client is limited to
    edge_max_streams: int = 1000  # open MCP event streams per replica
    edge_keepalive_s: float = 15.0

    def __post_init__(self) -> None:
        if not 1024 <= self.edge_max_body_bytes <= 64 * 1_048_576:
            raise ValueError("edge_max_body_bytes: must be from 1024 to 67108864")
        if self.edge_rate_per_s <= 0 or self.edge_rate_burst < 1:
            raise ValueError("edge_rate_per_s: must be > 0, with edge_rate_burst at least 1")
        for name in ("edge_call_timeout_s", "edge_discovery_s", "edge_keepalive_s"):
            if not 0 < getattr(self, name) <= 3600:
                raise ValueError(f"{name}: must be a number of seconds from 0 to 3600")
        if not 0 < self.edge_discovery_window_s < self.edge_discovery_s:
            raise ValueError("edge_discovery_window_s: must be > 0 and below edge_discovery_s")
        if self.edge_max_streams < 1:
            raise ValueError("edge_max_streams: must be a whole number of at least 1")
        if not split_list(self.edge_tools):
            raise ValueError("edge_tools: must name at least one pattern ('*' for all)")

    @property
    def cors_origins(self) -> list[str]:
        return split_list(self.edge_cors_origins)

    @property
    def tool_patterns(self) -> list[str]:
        return split_list(self.edge_tools)
