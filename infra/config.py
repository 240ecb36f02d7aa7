"""Settings of the infra agent, from ``SOPHIA_INFRA_<FIELD>`` or ``[infra]`` in sophia.toml.

Each field states its bounds, so a bad value stops the agent at start with the variable's
name (``bus.config.load``). Pulumi's own variables (``PULUMI_ACCESS_TOKEN``,
``PULUMI_CONFIG_PASSPHRASE``…) are read by the Pulumi CLI from the environment, never here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from bus.config import load

STACKS_DIR = Path(__file__).resolve().parent / "stacks"

LockTtl = Annotated[float, msgspec.Meta(ge=5, le=24 * 3600)]


class InfraSettings(msgspec.Struct, kw_only=True, frozen=True):
    infra_stacks_dir: str = str(STACKS_DIR)  # where the Pulumi programs live
    infra_backend_url: str = ""  # "": file://$SOPHIA_HOME/pulumi, or Pulumi Cloud with a token
    infra_env: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,100}$")] = "dev"
    infra_protected: str = "sophia_k8s"  # comma-separated stacks that need `confirm`
    infra_esc_environments: str = ""  # comma-separated Pulumi ESC environments to attach
    infra_lock_ttl_s: LockTtl = 120.0  # a dead agent's lock frees itself after this long
    infra_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4  # operations at once

    @property
    def stacks_path(self) -> Path:
        return Path(self.infra_stacks_dir).expanduser()

    @property
    def protected(self) -> frozenset[str]:
        return frozenset(_names(self.infra_protected))

    @property
    def esc_environments(self) -> list[str]:
        return _names(self.infra_esc_environments)


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def load_infra() -> InfraSettings:
    """Raises ConfigError naming the variable."""
    return load(InfraSettings, section="infra")
