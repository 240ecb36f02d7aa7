"""Settings of the memory engine, from ``SOPHIA_<FIELD>`` variables (see ``bus.config.load``).

A backend URL left empty selects that tier's embedded default, kept under
``SOPHIA_HOME/memory``.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from bus.config import Settings, load


class MemorySettings(msgspec.Struct, kw_only=True, frozen=True):
    """Backends, embedder and policy knobs of the memory engine."""

    home: str = ""  # SOPHIA_HOME; empty: Settings' default
    redis_url: str = ""
    qdrant_url: str = ""
    qdrant_api_key: str = ""
    postgres_dsn: str = ""
    s3_bucket: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_prefix: str = "sophia/"
    embed_device: str = "auto"  # auto | cpu | cuda
    embed_threads: int = 0  # 0: onnxruntime's choice
    embed_max_batch: int = 32  # concurrent callers coalesced into one batch
    embed_run_batch: int = 0  # texts per model run; 0: 8 on CPU, 128 on CUDA
    embed_max_wait_ms: float = (
        0.0  # linger for more callers; batches fill anyway while the model is busy
    )
    embed_max_tokens: int = 256
    embed_quantize: bool = True  # on CPU: int8 matrix products (see memory/quantize.py)
    model_cache: str = ""  # built model variants; empty: $XDG_CACHE_HOME/sophia/models
    l1_max_items: int = 10_000
    l1_ttl_s: float = 600.0
    max_text_bytes: int = 524_288  # under NATS's default 1 MB payload, with room for JSON
    archive_bytes: int = 32_768  # bodies larger than this live in L4
    cache_threshold: float = 0.92
    cache_ttl_s: float = 86_400.0
    chunk_lines: int = 60
    chunk_overlap: int = 10
    backend_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.embed_device not in {"auto", "cpu", "cuda"}:
            raise ValueError("embed_device: must be one of auto, cpu, cuda")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url: must start with redis://, rediss:// or unix://")
        if self.qdrant_url and not self.qdrant_url.startswith(("http://", "https://", ":memory:")):
            raise ValueError("qdrant_url: must start with http:// or https://")
        if self.postgres_dsn and not self.postgres_dsn.startswith(("postgres://", "postgresql://")):
            raise ValueError("postgres_dsn: must start with postgres:// or postgresql://")
        if not 0 <= self.embed_run_batch <= 1024:
            raise ValueError("embed_run_batch: must be a whole number from 0 to 1024")
        if self.embed_threads < 0 or self.embed_threads > 256:
            raise ValueError("embed_threads: must be a whole number from 0 to 256")
        for name in ("embed_max_batch", "l1_max_items", "max_text_bytes", "archive_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a whole number of at least 1")
        if not 16 <= self.embed_max_tokens <= 512:
            raise ValueError("embed_max_tokens: must be from 16 to 512")
        for name in ("l1_ttl_s", "cache_ttl_s", "backend_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be a number greater than 0")
        if not 0 <= self.embed_max_wait_ms <= 1000:
            raise ValueError("embed_max_wait_ms: must be from 0 to 1000")
        if not 0 < self.cache_threshold <= 1:
            raise ValueError("cache_threshold: must be greater than 0 and at most 1")
        if not 0 <= self.chunk_overlap < self.chunk_lines:
            raise ValueError("chunk_overlap: must be at least 0 and less than chunk_lines")

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
