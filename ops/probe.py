"""``python -m ops.probe SERVICE``: is this host's instance of SERVICE connected and serving?

The health check of one agent container (compose.yaml) or pod (the exec probes of
infra/stacks/sophia_k8s). It connects with the process's own settings and credentials
(``SOPHIA_NATS_URL``, ``SOPHIA_NATS_USER``, ``SOPHIA_NATS_PASSWORD``), sends ``$SRV.PING.<SERVICE>``
and looks for a reply from an instance on this host (the service metadata's ``host``: a
container's or pod's own hostname), so it checks this replica, not any replica of the
service. Exit 0 when one answers within the window, 1 when none does, 3 when NATS cannot be
reached, 2 for a bad argument; one line either way. Bounded: connect ``CONNECT_TIMEOUT_S``, then one
discovery window.
"""

from __future__ import annotations

import argparse
import socket
import sys

import anyio

from bus.config import Settings, load
from bus.errors import SophiaError
from bus.micro import PingResponse
from bus.subjects import srv, token
from ops.session import DISCOVER_WINDOW_S, discover, open_bus, ours

EXIT_UNHEALTHY = 1
EXIT_UNREACHABLE = 3


async def local_instances(settings: Settings, service: str, window: float) -> list[str]:
    """Ids of the instances of ``service`` of this install that run on this host."""
    host = socket.gethostname()
    async with open_bus(settings) as bus:
        replies = await discover(bus.nc, srv("PING", service), PingResponse, window)
    return [r.id for r in replies if r.metadata.get("host") == host and ours(r.metadata, settings)]


def service_name(value: str) -> str:
    try:
        return token(value, "service name")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.probe", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "service", type=service_name, help="the service name, e.g. memory, tasks, coder, edge"
    )
    parser.add_argument("--window", type=float, default=4 * DISCOVER_WINDOW_S, metavar="SECONDS")
    args = parser.parse_args(argv)
    try:
        service = args.service
        settings = load(Settings)
        found = anyio.run(local_instances, settings, service, args.window)
    except SophiaError as exc:
        print(f"{args.service}: {exc}")
        return EXIT_UNREACHABLE
    if not found:
        print(f"{service}: no instance on {socket.gethostname()} answered $SRV.PING")
        return EXIT_UNHEALTHY
    print(f"{service}: ok ({', '.join(found)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
