"""``python -m edge``: the MCP (streamable HTTP) and HTTP API server on ``SOPHIA_EDGE_BIND``."""

from edge.serve import main

if __name__ == "__main__":
    main()
