"""Settings from ``SOPHIA_*`` environment variables and an optional ``sophia.toml``.

Every settings type is a ``msgspec.Struct``; :func:`load` fills one from the
environment (which wins) and the TOML file, converting strings to the field types
and running the struct's own ``__post_init__`` checks. A bad value raises
:class:`ConfigError` whose one-line message names the variable and what is allowed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from bus.errors import ConfigError

T = TypeVar("T", bound=msgspec.Struct)

ENV_PREFIX = "SOPHIA_"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+$")


def _default_home() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "sophia")


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Core settings every Sophia process shares."""

    home: str = msgspec.field(default_factory=_default_home)
    nats_url: str = "nats://127.0.0.1:4222"
    edge_bind: str = "127.0.0.1:8420"
    prefix: str = "sophia"
    log_level: str = "info"
    request_timeout_s: float = 10.0
    drain_grace_s: float = 10.0
    work_max_inflight: int = 64
    work_batch: int = 32
    work_max_deliver: int = 5
    work_ack_wait_s: float = 30.0
    reconnect_max_s: float = 2.0

    def __post_init__(self) -> None:
        if not _TOKEN.match(self.prefix):
            raise ValueError("prefix: must be one subject token of letters, digits, '_' or '-'")
        if not self.nats_url.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError("nats_url: must start with nats://, tls://, ws:// or wss://")
        host, sep, port = self.edge_bind.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("edge_bind: must be HOST:PORT with a port from 1 to 65535")
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level: must be one of debug, info, warning, error")
        for name in ("request_timeout_s", "drain_grace_s", "work_ack_wait_s", "reconnect_max_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be a number greater than 0")
        for name in ("work_max_inflight", "work_batch", "work_max_deliver"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a whole number of at least 1")

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()

    @property
    def edge_host_port(self) -> tuple[str, int]:
        host, _, port = self.edge_bind.rpartition(":")
        return host, int(port)


def _env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


def _toml_path(env: Mapping[str, str]) -> Path | None:
    explicit = env.get("SOPHIA_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("sophia.toml")
    return local if local.is_file() else None


def load(
    cls: type[T] = Settings,  # type: ignore[assignment]
    env: Mapping[str, str] | None = None,
    *,
    section: str | None = None,
) -> T:
    """Build ``cls`` from ``SOPHIA_<FIELD>`` variables over ``sophia.toml`` values.

    ``section`` names the TOML table to read (top level when None). Raises
    ConfigError naming the variable and what it allows.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    path = _toml_path(env)
    if path is not None:
        table = _read_toml(path)
        if section:
            table = table.get(section, {})
        names = {f.name for f in msgspec.structs.fields(cls)}
        raw.update({k: v for k, v in table.items() if k in names})
    for field in msgspec.structs.fields(cls):
        value = env.get(_env_name(field.name))
        if value is not None and value != "":
            raw[field.name] = value
    try:
        return msgspec.convert(raw, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(cls, str(exc))) from None


def _explain(cls: type[msgspec.Struct], message: str) -> str:
    """Turn msgspec's message into one line that names the environment variable."""
    match = re.search(r"at `\$\.(\w+)`", message)
    if match:
        field = match.group(1)
        what = message.split(" - at ")[0]
        return f"{_env_name(field)}: {what}"
    field, sep, what = message.partition(": ")
    names = {f.name for f in msgspec.structs.fields(cls)}
    if sep and field in names:
        return f"{_env_name(field)}: {what}"
    return message
