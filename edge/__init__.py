"""The edge: MCP (stdio and streamable HTTP) and an HTTP API, each call one bus request."""
