"""Sophia's actor runtime over NATS: agents, endpoints, durable work, events, tracing."""

from bus.agent import Agent
from bus.client import Bus
from bus.config import Settings
from bus.context import message_headers
from bus.errors import (
    BadRequestError,
    ConfigError,
    ForbiddenError,
    NotFoundError,
    OverLimitError,
    RetryableError,
    SophiaError,
    UnavailableError,
)
from bus.handlers import endpoint, work
from bus.subjects import Subjects

__all__ = [
    "Agent",
    "BadRequestError",
    "Bus",
    "ConfigError",
    "ForbiddenError",
    "NotFoundError",
    "OverLimitError",
    "RetryableError",
    "Settings",
    "SophiaError",
    "Subjects",
    "UnavailableError",
    "endpoint",
    "message_headers",
    "work",
]
