"""MCP for the edge: the SDK's kernel driven by the edge's own stdio and HTTP transports."""
