"""Pick each tier's backend from settings: a server when configured, else the embedded one.

Each backend's module (and its client library: qdrant-client alone takes most of a second to
import) is imported only when that backend is chosen.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from memory.config import MemorySettings
from memory.tiers.base import ArchiveTier, FactTier, HotTier, VectorTier


def space_name(purpose: str, model_id: str) -> str:
    """Collection name of one vector space: a new model gets a new, empty space."""
    slug = re.sub(r"[^a-z0-9]+", "-", model_id.lower()).strip("-")[:40]
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:8]
    return f"sophia_{purpose}_{slug}_{digest}"


@dataclass(slots=True)
class Tiers:
    hot: HotTier
    facts: FactTier
    archive: ArchiveTier
    settings: MemorySettings

    def vectors(self, purpose: str, model_id: str, dim: int) -> VectorTier:
        """The L2 space for ``purpose`` ("items" or "cache") under ``model_id``."""
        return self.vectors_named(space_name(purpose, model_id), dim)

    def vectors_named(self, name: str, dim: int = 384) -> VectorTier:
        s = self.settings
        if s.qdrant_url:
            from memory.tiers.vector_qdrant import QdrantVectorTier

            location = s.qdrant_url if s.qdrant_url.startswith(":") else None
            return QdrantVectorTier(
                name,
                dim,
                url=None if location else s.qdrant_url,
                api_key=s.qdrant_api_key,
                location=location,
                timeout_s=s.backend_timeout_s,
            )
        from memory.tiers.vector_edge import EdgeVectorTier

        return EdgeVectorTier(self.vector_root / name, dim)

    @property
    def vector_root(self) -> Path:
        return self.settings.data_path / "l2"


def select(settings: MemorySettings) -> Tiers:
    """Backends for L1, L3 and L4 (L2 spaces come from :meth:`Tiers.vectors`)."""
    return Tiers(
        hot=_hot(settings), facts=_facts(settings), archive=_archive(settings), settings=settings
    )


def _hot(s: MemorySettings) -> HotTier:
    if s.redis_url:
        from memory.tiers.hot_redis import RedisHotTier

        return RedisHotTier(s.redis_url, timeout_s=s.backend_timeout_s)
    from memory.tiers.hot_lru import LruHotTier

    return LruHotTier(s.l1_max_items)


def _facts(s: MemorySettings) -> FactTier:
    if s.postgres_dsn:
        from memory.tiers.facts_postgres import PostgresFactTier

        return PostgresFactTier(s.postgres_dsn, timeout_s=s.backend_timeout_s)
    from memory.tiers.facts_sqlite import SqliteFactTier

    return SqliteFactTier(s.data_path / "l3" / "facts.sqlite3")


def _archive(s: MemorySettings) -> ArchiveTier:
    if s.s3_bucket:
        from memory.tiers.archive_s3 import S3ArchiveTier

        return S3ArchiveTier(
            s.s3_bucket,
            prefix=s.s3_prefix,
            endpoint_url=s.s3_endpoint_url or None,
            region=s.s3_region,
            access_key_id=s.s3_access_key_id or None,
            secret_access_key=s.s3_secret_access_key or None,
            timeout_s=s.backend_timeout_s,
        )
    from memory.tiers.archive_local import LocalArchiveTier

    return LocalArchiveTier(s.data_path / "l4")
