"""Where the infra agent's Pulumi programs live and how their stacks are opened.

A program is a directory under ``infra/stacks/`` holding a ``Pulumi.yaml``; its stacks are
opened with the Automation API as *local* programs (the CLI runs ``__main__.py`` in that
directory). The backend is ``SOPHIA_INFRA_BACKEND_URL`` when set, else Pulumi Cloud when
``PULUMI_ACCESS_TOKEN`` is in the environment (the CLI reads the token itself; it never passes
through Sophia), else the local ``file://$SOPHIA_HOME/pulumi``.

The CLI is found once and kept: without it every operation raises UnavailableError (503)
naming what to install. Tests hand in a :class:`~pulumi.automation.PulumiCommand` of their
own through ``command`` (it reaches ``LocalWorkspaceOptions(pulumi_command=…)``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pulumi import automation as auto

from bus.config import Settings, redact_url
from bus.errors import NotFoundError, UnavailableError
from bus.subjects import is_token
from infra.config import InfraSettings

INSTALL_HINT = (
    "the Pulumi CLI is not installed: curl -fsSL https://get.pulumi.com | sh "
    "(https://www.pulumi.com/docs/install/)"
)
PROJECT_FILE = "Pulumi.yaml"


@dataclass(frozen=True, slots=True)
class Program:
    """One Pulumi program under the stacks directory."""

    name: str
    path: Path
    protected: bool


def installed_pulumi() -> auto.PulumiCommand:
    """The ``pulumi`` on ``$PATH``. Raises UnavailableError naming what to install."""
    if shutil.which("pulumi") is None:
        raise UnavailableError(INSTALL_HINT)
    try:
        return auto.PulumiCommand()
    except (OSError, subprocess.CalledProcessError, auto.InvalidVersionError):
        raise UnavailableError(f"the Pulumi CLI does not run; {INSTALL_HINT}") from None


def backend_env(
    settings: Settings, infra: InfraSettings, environ: Mapping[str, str]
) -> dict[str, str]:
    """The variables that choose the backend for every CLI call (see the module docstring)."""
    if infra.infra_backend_url:
        return {"PULUMI_BACKEND_URL": infra.infra_backend_url}
    if environ.get("PULUMI_ACCESS_TOKEN"):
        return {}
    local = settings.home_path / "pulumi"
    local.mkdir(parents=True, exist_ok=True)
    return {"PULUMI_BACKEND_URL": local.resolve().as_uri()}


def program_env(environ: Mapping[str, str]) -> dict[str, str]:
    """PATH with this interpreter's directory first: the CLI's Python language host then runs a
    program with this environment's packages (pulumi, pulumi-kubernetes, Sophia's own)."""
    path = environ.get("PATH", "")
    return {"PATH": os.pathsep.join(p for p in (str(Path(sys.executable).parent), path) if p)}


def backend_name(env: Mapping[str, str]) -> str:
    """The backend as it may be shown: its URL with credentials masked, or ``pulumi-cloud``."""
    url = env.get("PULUMI_BACKEND_URL")
    return redact_url(url) if url else "pulumi-cloud"


class Workspaces:
    """The programs and the Automation API workspaces of one infra agent."""

    def __init__(
        self,
        settings: Settings,
        infra: InfraSettings,
        command: Callable[[], auto.PulumiCommand] = installed_pulumi,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.infra = infra
        environ = os.environ if environ is None else environ
        self.env_vars = {**backend_env(settings, infra, environ), **program_env(environ)}
        self._find_command = command
        self._command: auto.PulumiCommand | None = None
        self._found = threading.Lock()  # stacks open in worker threads

    @property
    def backend(self) -> str:
        return backend_name(self.env_vars)

    def programs(self) -> list[Program]:
        """Every directory with a ``Pulumi.yaml`` under the stacks directory, by name."""
        root = self.infra.stacks_path
        if not root.is_dir():
            return []
        found = [p for p in root.iterdir() if is_token(p.name) and (p / PROJECT_FILE).is_file()]
        return [self._program(p) for p in sorted(found)]

    def program(self, name: str) -> Program:
        """Raises NotFoundError naming ``stack``."""
        path = self.infra.stacks_path / name
        if not is_token(name) or not (path / PROJECT_FILE).is_file():
            raise NotFoundError(f"stack: no program {name!r} under infra/stacks")
        return self._program(path)

    def _program(self, path: Path) -> Program:
        return Program(path.name, path, path.name in self.infra.protected)

    def command(self) -> auto.PulumiCommand:
        """The CLI, found on first use. Raises UnavailableError naming what to install."""
        with self._found:
            if self._command is None:
                self._command = self._find_command()
            return self._command

    def cli_state(self) -> str:
        """``available``, or the install hint (for ``stacks`` and health)."""
        try:
            self.command()
        except UnavailableError as exc:
            return exc.description
        return "available"

    def open(self, program: Program, env: str) -> auto.Stack:
        """Select (or create) stack ``env`` of ``program``; blocking, so run it in a thread.

        Raises UnavailableError when the CLI is missing.
        """
        options = auto.LocalWorkspaceOptions(
            env_vars=dict(self.env_vars), pulumi_command=self.command()
        )
        stack = auto.create_or_select_stack(
            stack_name=env, work_dir=str(program.path), opts=options
        )
        if self.infra.esc_environments:
            stack.add_environments(*self.infra.esc_environments)
        return stack
