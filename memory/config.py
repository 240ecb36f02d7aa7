"""Settings of the memory engine, from ``SOPHIA_<FIELD>`` variables (see ``bus.config.load``).

A backend URL left empty selects that tier's embedded default, kept under
``SOPHIA_HOME/memory``. Bounds are declared on the fields (msgspec ``Meta`` and ``Literal``),
so a bad value is refused with the variable's name when the settings are loaded; only the
check across two fields stays in ``__post_init__``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from bus.config import Count, Seconds, Settings, load


def _url(pattern: str, description: str) -> msgspec.Meta:
    """A backend address: empty (the embedded default) or matching ``pattern``."""
    return msgspec.Meta(pattern=rf"^$|^{pattern}", description=description)


RedisUrl = Annotated[
    str, _url(r"(redis|rediss|unix)://", "must start with redis://, rediss:// or unix://")
]
QdrantUrl = Annotated[str, _url(r"(https?://|:memory:$)", "must start with http:// or https://")]
PostgresDsn = Annotated[
    str, _url(r"postgres(ql)?://", "must start with postgres:// or postgresql://")
]


class MemorySettings(msgspec.Struct, kw_only=True, frozen=True):
    """Backends, embedder and policy knobs of the memory engine; each field states its bounds
    (``bus.config.load`` turns a value outside them into a ConfigError naming the variable)."""

    home: str = ""  # SOPHIA_HOME; empty: Settings' default
    redis_url: RedisUrl = ""
    qdrant_url: QdrantUrl = ""  # ":memory:" too: qdrant-client's in-process mode, for tests
    qdrant_api_key: str = ""
    postgres_dsn: PostgresDsn = ""
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_prefix: str = "sophia/"
    embed_device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU: model runs at once, one thread each (0: the usable cores); CUDA: intra-op threads
    embed_threads: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0
    embed_max_batch: Count = 32  # concurrent callers coalesced into one batch
    # texts per model run; 0: 8 on CPU, 128 on CUDA
    embed_run_batch: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 0
    # linger for more callers; batches fill anyway while the model is busy
    embed_max_wait_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 0.0
    embed_max_tokens: Annotated[int, msgspec.Meta(ge=16, le=512)] = 256
    embed_quantize: bool = True  # on CPU: int8 matrix products (see memory/quantize.py)
    model_cache: str = ""  # built model variants; empty: $XDG_CACHE_HOME/sophia/models
    l1_max_items: Count = 10_000
    l1_ttl_s: Seconds = 600.0
    max_text_bytes: Count = 524_288  # an item's text, a summary, a prompt or a response
    archive_bytes: Count = 32_768  # bodies larger than this live in L4
    # measured (bench/cache_quality.py): with the same-question check, tune's figures are
    # flat below 0.80; 0.74 keeps a margin for unseen paraphrases. The check, not this,
    # refuses near-misses: embedding similarity alone cannot (they reach 0.99)
    cache_threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.74
    cache_ttl_s: Seconds = 86_400.0
    chunk_lines: Count = 60
    chunk_overlap: Annotated[int, msgspec.Meta(ge=0)] = 10
    backend_timeout_s: Seconds = 10.0

    def __post_init__(self) -> None:
        if self.chunk_overlap >= self.chunk_lines:
            raise ValueError("chunk_overlap: must be less than chunk_lines")

    @property
    def model_cache_path(self) -> Path:
        """Where derived model files are kept (content-addressed, safe to share)."""
        if self.model_cache:
            return Path(self.model_cache).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "sophia" / "models"

    @property
    def data_path(self) -> Path:
        """Where embedded backends keep their files."""
        home = Path(self.home).expanduser() if self.home else load(Settings).home_path
        return home / "memory"


def load_settings() -> MemorySettings:
    """MemorySettings from the environment. Raises ConfigError naming the bad variable."""
    return load(MemorySettings)
