"""Print pins of the lowest nats-py and mcp releases pyproject.toml allows (for `make test`).

``mcp`` pins its ``mcp-types`` to its own version, so that pin comes along.
"""

import re
import tomllib
from pathlib import Path

CHECKED = ("nats-py", "mcp")

dependencies = tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
pins = []
for requirement in dependencies:
    match = re.match(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement)
    if match and match[1] in CHECKED:
        pins.append(f"{match[1]}=={match[2]}")
        if match[1] == "mcp":
            pins.append(f"mcp-types=={match[2]}")
print(" ".join(pins))
