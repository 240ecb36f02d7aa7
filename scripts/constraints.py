"""Print pins (``name==version``) for everything ``sophia[cpu]`` installs, from this environment.

The Dockerfile installs with ``-c ops/docker/constraints.txt`` so an image gets exactly the
releases the tests passed on. Only the runtime closure is pinned (the ``cpu`` extra and what it
pulls in, markers evaluated for Linux), not the test or bench tools.

    python scripts/constraints.py > ops/docker/constraints.txt
    python scripts/constraints.py --check ops/docker/constraints.txt   # exit 1 when stale
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEADER = "# written by scripts/constraints.py from a tested environment: do not edit by hand\n"
LINUX = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux"}


def closure(root: str, extras: set[str]) -> dict[str, str]:
    """Every distribution ``root[extras]`` needs, by canonical name, with its installed version."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        dist = metadata.distribution(name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({**LINUX, "extra": extra}) for extra in (wanted or {""})
            ):
                continue
            key = canonicalize_name(req.name)
            if key in pins:
                continue
            pins[key] = metadata.version(req.name)
            todo.append((req.name, set(req.extras)))
    pins.pop(canonicalize_name(root), None)
    return pins


def render(pins: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=Path, help="compare with this file instead of printing")
    args = parser.parse_args()
    text = render(closure("sophia", {"cpu"}))
    if args.check is None:
        sys.stdout.write(text)
        return 0
    if args.check.read_text() != text:
        print(f"{args.check} is stale: python scripts/constraints.py > {args.check}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
