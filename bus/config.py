"""Settings from ``SOPHIA_*`` environment variables and an optional ``sophia.toml``.

Every settings type is a frozen ``msgspec.Struct`` that declares its bounds on its fields
(``Annotated[int, Meta(ge=1)]``, ``Literal[...]``, a pattern with a ``description`` saying
what it allows); :func:`load` fills one from the environment (which wins) and the TOML file,
converting strings to the field types. What a field cannot say alone (one field below
another) stays in the struct's ``__post_init__``, raising ``ValueError("field: what")``. A bad
value raises :class:`ConfigError` whose one-line message names the variable and what it
allows, e.g. ``SOPHIA_WORK_BATCH: must be a whole number of at least 1``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import msgspec.inspect as mi

from bus.errors import ConfigError
from bus.subjects import TOKEN_PATTERN

T = TypeVar("T", bound=msgspec.Struct)

ENV_PREFIX = "SOPHIA_"

#: a positive, finite number of seconds (at most a week), a count of at least one: the usual
#: settings' shapes
Seconds = Annotated[float, msgspec.Meta(gt=0, le=7 * 24 * 3600)]
Count = Annotated[int, msgspec.Meta(ge=1)]


def _default_home() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "sophia")


_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Core settings every Sophia process shares."""

    home: str = msgspec.field(default_factory=_default_home)
    nats_url: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^(nats|tls|ws|wss)://",
            description="must start with nats://, tls://, ws:// or wss://",
        ),
    ] = "nats://127.0.0.1:4222"
    edge_bind: Annotated[
        str,
        msgspec.Meta(
            pattern=rf"^[^\s]+:{_PORT}$",
            description="must be HOST:PORT with a port from 1 to 65535",
        ),
    ] = "127.0.0.1:8420"
    prefix: Annotated[
        str,
        msgspec.Meta(
            pattern=TOKEN_PATTERN,
            description="must be one subject token of letters, digits, '_' or '-'",
        ),
    ] = "sophia"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    request_timeout_s: Seconds = 10.0
    drain_grace_s: Seconds = 10.0
    work_max_inflight: Count = 64
    work_batch: Count = 32
    work_max_deliver: Count = 5
    work_ack_wait_s: Seconds = 30.0
    #: the watchdog: a work handler still running this long after it started is given up on
    work_deadline_s: Seconds = 3600.0
    reconnect_max_s: Seconds = 2.0
    #: this process's own NATS user and password (ops/nats/accounts.conf gives each agent one);
    #: empty for a server without accounts. The password never appears in a repr or a log.
    nats_user: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^[A-Za-z0-9_-]*$",
            description="must be a NATS user name of letters, digits, '_' or '-'",
        ),
    ] = ""
    nats_password: str = ""
    #: JetStream replicas of the streams and KV buckets this install creates (3 on a cluster)
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    # where this process serves Prometheus /metrics (port 0: a free one), or off (bus/metrics.py)
    metrics_bind: Annotated[
        str,
        msgspec.Meta(
            pattern=rf"^(off|[^\s]+:(0|{_PORT}))$",
            description="must be HOST:PORT with a port from 0 (any free one) to 65535, or off",
        ),
    ] = "127.0.0.1:0"
    #: finished spans also written as OTLP-JSON lines under ``<home>/traces`` (bus/spanfiles.py)
    #: for ``sophia trace``: ``auto`` is on in the programs ``sophia up`` starts, else off
    trace_files: Literal["auto", "on", "off"] = "auto"
    #: what ``<home>/traces`` may hold in all; the oldest files go first
    trace_files_max_mb: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 64

    def __repr__(self) -> str:
        shown = msgspec.structs.asdict(self)
        shown["nats_url"] = self.safe_nats_url
        if shown["nats_password"]:
            shown["nats_password"] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser()

    @property
    def safe_nats_url(self) -> str:
        """``nats_url`` as it may be shown: credentials replaced by ``***``."""
        return redact_url(self.nats_url)

    @property
    def edge_host_port(self) -> tuple[str, int]:
        host, _, port = self.edge_bind.rpartition(":")
        return host, int(port)


def redact_url(url: str) -> str:
    """``url`` (or a comma-separated list of them) with credentials replaced by ``***``: a
    password, or a lone user part, which for NATS is a token. It goes to screens and logs."""
    return ",".join(_redact_one(part.strip()) for part in url.split(","))


def _redact_one(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = "***" if parts.password is None else f"{parts.username}:***"
    return urlunsplit(parts._replace(netloc=f"{user}@{host}{port}"))


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


def toml_table(section: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``[section]`` table of ``sophia.toml`` (or ``SOPHIA_CONFIG``), empty when absent.

    Raises ConfigError when the file cannot be read or parsed.
    """
    path = _toml_path(os.environ if env is None else env)
    if path is None:
        return {}
    table = _read_toml(path).get(section, {})
    return table if isinstance(table, dict) else {}


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
        return msgspec.convert(_lower_choices(cls, raw), cls, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(cls, str(exc))) from None


def _fields(cls: type[msgspec.Struct]) -> dict[str, mi.Type]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return {f.name: f.type for f in info.fields}


def _lower_choices(cls: type[msgspec.Struct], raw: dict[str, Any]) -> dict[str, Any]:
    """``INFO`` for a field that allows ``info``: choices are matched without case."""
    for name, tp in _fields(cls).items():
        value = raw.get(name)
        if isinstance(tp, mi.LiteralType) and isinstance(value, str) and value not in tp.values:
            if value.lower() in tp.values:
                raw[name] = value.lower()
    return raw


def _explain(cls: type[msgspec.Struct], message: str) -> str:
    """Turn msgspec's message into one line that names the environment variable.

    A value of the wrong type keeps msgspec's words (``Expected `int`, got `str```); a value
    outside the field's bounds is told what the field allows.
    """
    fields = _fields(cls)
    what, at, path = message.rpartition(" - at `$.")
    if at:
        name = path.rstrip("`")
        if ", got `" in what or name not in fields:
            return f"{_env_name(name)}: {what}"
        return f"{_env_name(name)}: {allowed(fields[name])}"
    name, sep, rest = message.partition(": ")
    if sep and name in fields:
        return f"{_env_name(name)}: {rest}"
    return message


def allowed(tp: mi.Type) -> str:
    """What a field of type ``tp`` allows, in words: ``must be a whole number of at least 1``."""
    if isinstance(tp, mi.Metadata):
        description = (tp.extra_json_schema or {}).get("description")
        return description or allowed(tp.type)
    if isinstance(tp, mi.LiteralType):
        return "must be one of " + ", ".join(str(v) for v in tp.values)
    if isinstance(tp, mi.BoolType):
        return "must be true or false"
    if isinstance(tp, mi.IntType | mi.FloatType):
        noun = "a whole number" if isinstance(tp, mi.IntType) else "a number"
        low = f"of at least {tp.ge}" if tp.ge is not None else None
        low = f"greater than {tp.gt}" if tp.gt is not None else low
        high = f"at most {tp.le}" if tp.le is not None else None
        high = f"below {tp.lt}" if tp.lt is not None else high
        if tp.ge is not None and tp.le is not None:
            return f"must be {noun} from {tp.ge} to {tp.le}"
        return " ".join(["must be", noun, " and ".join(p for p in (low, high) if p)]).strip()
    if isinstance(tp, mi.StrType):
        return "must be text" + (f" matching {tp.pattern}" if tp.pattern else "")
    if isinstance(tp, mi.UnionType):  # an optional setting: what its value allows
        values = [t for t in tp.types if not isinstance(t, mi.NoneType)]
        if len(values) == 1:
            return allowed(values[0])
    return "has a value that is not allowed"
