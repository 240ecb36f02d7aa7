"""Fuzzing every endpoint through the bus, the HTTP API and MCP (marker ``fuzz``)."""
