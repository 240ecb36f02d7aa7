"""NATS for production: server configuration and per-user permissions (see README.md)."""
