"""Who may publish and subscribe to what on Sophia's NATS, derived from the agents themselves.

Guarantee: each agent's user may serve exactly the endpoints in its agent's endpoint table
(read with :func:`bus.handlers.collect`, so a new endpoint needs no edit here), answer the
service API for its own service, pull and ack its own work, and do what :data:`NEEDS` says
its code does beyond that: the other services' endpoints it calls, the work it submits, the
events it emits or hears, the KV buckets it reads or writes. The edge may call public
endpoints only. Replies stay private: a user subscribes to its own inboxes
(``_INBOX.<user>.>``, see :func:`bus.connection.credentials`) and no one else's.

Every process runs :func:`bus.topology.ensure_streams` at start, so every user may look up,
create and update the install's streams and buckets (that call needs no more than that).

``python -m ops.nats.permissions [--prefix P]`` prints ``accounts.conf``; a test checks that
the committed file is what this prints, so the two cannot drift.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bus.handlers import collect
from bus.runner import load_agent
from bus.subjects import INBOX_PREFIX, JS_API_PREFIX, Subjects, srv
from infra.lock import locks_bucket
from ops.stack import agent_modules

ACCOUNT = "SOPHIA"
SYSTEM_ACCOUNT = "SYS"
EDGE = "edge"
ADMIN = "admin"
SYSTEM_USER = "sys"
PASSWORD_ENV = "NATS_PASSWORD_"


@dataclass(frozen=True, slots=True)
class Needs:
    """What one service does on the bus beyond serving its endpoints and pulling its work;
    read from its code (``bus.request``, ``submit_work``, ``emit``, ``key_value`` calls)."""

    calls: tuple[tuple[str, str], ...] = ()  # (service, endpoint) it requests
    submits: tuple[str, ...] = ()  # services whose durable work it submits
    emits: tuple[str, ...] = ()  # event subjects after ``<prefix>.events.``
    hears: tuple[str, ...] = ()  # event subjects it subscribes to
    reads: tuple[str, ...] = ()  # KV buckets it reads (get, keys, watch)
    writes: tuple[str, ...] = ()  # KV buckets it also writes
    reads_events: bool = False  # reads the last event of a subject from the events stream


#: bucket kinds, named as :class:`Subjects` names them
TASKS, BUDGETS, SESSIONS, CONFIG, INFRA_LOCKS = "tasks", "budgets", "sessions", "config", "locks"

#: per service: tasks/planner.py, tasks/calls.py, tasks/outcomes.py, tasks/store.py,
#: tasks/steps.py, adapters/llm/{cache,accounting,budget}.py, agents/infra.py, infra/lock.py
NEEDS: dict[str, Needs] = {
    "tasks": Needs(
        calls=(("memory", "index"), ("memory", "search"), ("memory", "store"), ("llm", "complete")),
        submits=("tasks", "coder", "reviewer"),
        emits=("task.*",),
        hears=("task.*",),
        writes=(TASKS,),
    ),
    "coder": Needs(
        calls=(("llm", "complete"),), submits=("tasks",), emits=("task.*",), writes=(TASKS,)
    ),
    "reviewer": Needs(
        calls=(("llm", "complete"),), submits=("tasks",), emits=("task.*",), writes=(TASKS,)
    ),
    "llm": Needs(
        calls=(("memory", "cache.lookup"), ("memory", "cache.put")),
        emits=("llm.call", "llm.degraded"),
        writes=(BUDGETS,),
    ),
    "memory": Needs(),
    "infra": Needs(emits=("infra.*",), writes=(INFRA_LOCKS,), reads_events=True),
}

#: the edge (edge/runtime.py, catalog.py, audit.py, gateway.py, tokens.py, mcp/sessions.py)
EDGE_NEEDS = Needs(
    emits=("edge.audit", "edge.cancel"), hears=("edge.cancel",), reads=(CONFIG,), writes=(SESSIONS,)
)


@dataclass(frozen=True, slots=True)
class Service:
    """One agent's service as its endpoint table declares it."""

    name: str
    endpoints: tuple[str, ...]  # subject tails, e.g. ``session.save``
    public: tuple[str, ...]
    works: bool  # it has a ``@work`` handler, so a durable consumer of its own


@dataclass(slots=True)
class Permissions:
    """One user's allow-lists, in the order they were added, without repeats."""

    user: str
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    responses: bool = True

    def pub(self, *subjects: str) -> None:
        self.publish.extend(s for s in subjects if s not in self.publish)

    def sub(self, *subjects: str) -> None:
        self.subscribe.extend(s for s in subjects if s not in self.subscribe)


def services() -> list[Service]:
    """Every agent ``sophia up`` would run, read from its class. Raises ConfigError."""
    found = []
    for name, module in agent_modules().items():
        endpoints, work_spec = collect(load_agent(module))
        tails = tuple(spec.subject_tail for spec in endpoints.values())
        public = tuple(spec.subject_tail for spec in endpoints.values() if spec.public)
        found.append(Service(name, tails, public, work_spec is not None))
    return found


def bucket(subjects: Subjects, kind: str) -> str:
    names = {
        TASKS: subjects.tasks_bucket,
        BUDGETS: subjects.budgets_bucket,
        SESSIONS: subjects.sessions_bucket,
        CONFIG: subjects.config_bucket,
        INFRA_LOCKS: locks_bucket(subjects.prefix),
    }
    return names[kind]


def _topology(p: Permissions, subjects: Subjects) -> None:
    """What :func:`bus.topology.ensure_streams` asks of JetStream."""
    for stream in (subjects.work_stream, subjects.events_stream, subjects.dlq_stream):
        p.pub(*(f"{JS_API_PREFIX}.STREAM.{op}.{stream}" for op in ("INFO", "CREATE", "UPDATE")))
    for kind in (TASKS, SESSIONS, CONFIG, BUDGETS):
        kv = f"KV_{bucket(subjects, kind)}"
        p.pub(f"{JS_API_PREFIX}.STREAM.INFO.{kv}", f"{JS_API_PREFIX}.STREAM.CREATE.{kv}")


def _kv(p: Permissions, name: str, *, write: bool) -> None:
    """Open, get, keys and watch (an ordered push consumer with flow control); put when
    ``write``."""
    stream = f"KV_{name}"
    api = JS_API_PREFIX
    p.pub(
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.CREATE.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.>",
        f"{api}.CONSUMER.INFO.{stream}.*",
        f"{api}.CONSUMER.DELETE.{stream}.*",
        f"$JS.FC.{stream}.>",
    )
    if write:
        p.pub(f"$KV.{name}.>")


def _needs(p: Permissions, subjects: Subjects, needs: Needs, table: dict[str, Service]) -> None:
    for service, endpoint in needs.calls:
        if endpoint not in table[service].endpoints:
            raise ValueError(f"{p.user}: calls {service}.{endpoint}, which no agent serves")
        p.pub(subjects.endpoint(service, endpoint))
    for service in needs.submits:
        if not table[service].works:
            raise ValueError(f"{p.user}: submits work to {service}, which takes none")
        p.pub(subjects.work(service))
    p.pub(*(f"{subjects.prefix}.events.{event}" for event in needs.emits))
    p.sub(*(f"{subjects.prefix}.events.{event}" for event in needs.hears))
    for kind in needs.reads:
        _kv(p, bucket(subjects, kind), write=False)
    for kind in needs.writes:
        _kv(p, bucket(subjects, kind), write=True)
    if needs.reads_events:
        stream = subjects.events_stream
        p.pub(f"{JS_API_PREFIX}.STREAM.MSG.GET.{stream}", f"{JS_API_PREFIX}.DIRECT.GET.{stream}.>")


def _answers_service_api(p: Permissions, name: str) -> None:
    for verb in ("PING", "INFO", "STATS"):
        p.sub(srv(verb), srv(verb, name), srv(verb, name) + ".*")


def agent_permissions(
    service: Service, subjects: Subjects, table: dict[str, Service]
) -> Permissions:
    """The user of one agent: its endpoints, its work, and its :data:`NEEDS`."""
    name = service.name
    p = Permissions(name)
    p.pub(INBOX_PREFIX + ">")  # replies, progress and streamed text go to callers' inboxes
    p.sub(f"{INBOX_PREFIX}{name}.>")
    p.sub(*(subjects.endpoint(name, tail) for tail in service.endpoints))
    _answers_service_api(p, name)
    p.pub(srv("PING", name))  # ops.probe: does this pod's instance answer? (health checks)
    _topology(p, subjects)
    if service.works:
        stream, durable = subjects.work_stream, subjects.consumer(name)
        consumer = f"{stream}.{durable}"
        p.pub(
            # nats-py creates a durable with no name on the legacy subject; with a name, on
            # the newer ones (nats-server 2.9+)
            f"{JS_API_PREFIX}.CONSUMER.DURABLE.CREATE.{consumer}",
            f"{JS_API_PREFIX}.CONSUMER.CREATE.{consumer}",
            f"{JS_API_PREFIX}.CONSUMER.CREATE.{consumer}.{subjects.work(name)}",
            f"{JS_API_PREFIX}.CONSUMER.INFO.{consumer}",
            subjects.pull_next(name),
            f"$JS.ACK.{consumer}.>",
            subjects.dlq(name),
        )
    _needs(p, subjects, NEEDS.get(name, Needs()), table)
    return p


def edge_permissions(subjects: Subjects, table: dict[str, Service]) -> Permissions:
    """The edge's user: every public endpoint and nothing else of the agents'."""
    p = Permissions(EDGE)
    p.pub(f"{INBOX_PREFIX}{EDGE}.>")  # its own progress end marker; replies: allow_responses
    p.sub(f"{INBOX_PREFIX}{EDGE}.>")
    for service in table.values():
        p.pub(*(subjects.endpoint(service.name, tail) for tail in service.public))
    p.pub(srv("INFO"), srv("PING") + ".*")  # discovery, and "has it gone?"
    _answers_service_api(p, EDGE)
    p.sub(subjects.endpoint(EDGE, "tokens.sync"))
    _topology(p, subjects)
    _needs(p, subjects, EDGE_NEEDS, table)
    return p


def permissions(prefix: str = "sophia") -> list[Permissions]:
    """Every restricted user of the install ``prefix``: one per agent, then the edge.

    Raises ValueError when :data:`NEEDS` names an endpoint or a work queue no agent has.
    """
    subjects = Subjects(prefix)
    table = {s.name: s for s in services()}
    unknown = sorted(set(NEEDS) - set(table))
    if unknown:
        raise ValueError(f"NEEDS names services no agent has: {', '.join(unknown)}")
    users = [agent_permissions(s, subjects, table) for s in table.values()]
    return [*users, edge_permissions(subjects, table)]


def user_names(prefix: str = "sophia") -> list[str]:
    """Every user of ``accounts.conf``: the agents', the edge, ``admin`` and ``sys``."""
    return [p.user for p in permissions(prefix)] + [ADMIN, SYSTEM_USER]


def password_env(user: str) -> str:
    """The environment variable the servers read ``user``'s password from."""
    return PASSWORD_ENV + user.upper().replace("-", "_")


def _list(subjects: Iterable[str], indent: str) -> list[str]:
    return [f'{indent}"{s}"' for s in subjects]


def _user(p: Permissions) -> list[str]:
    lines = [
        "      {",
        f'        user: "{p.user}"',
        f"        password: ${password_env(p.user)}",
        "        permissions: {",
        "          publish: { allow: [",
        *_list(p.publish, "            "),
        "          ] }",
        "          subscribe: { allow: [",
        *_list(p.subscribe, "            "),
        "          ] }",
    ]
    if p.responses:
        lines.append("          allow_responses: true")
    return [*lines, "        }", "      }"]


def render(prefix: str = "sophia") -> str:
    """``accounts.conf`` for the install ``prefix``."""
    users = permissions(prefix)
    names = [p.user for p in users] + [ADMIN, SYSTEM_USER]  # as user_names() has them
    header = [
        "# Generated by `python -m ops.nats.permissions"
        + (f" --prefix {prefix}" if prefix != "sophia" else "")
        + "` from the agents' endpoint tables: do not edit by hand.",
        "# Each password comes from the nats-server's environment: "
        + ", ".join(password_env(n) for n in names),
        "",
        "accounts {",
        f"  {ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
    ]
    body = [line for p in users for line in _user(p)]
    footer = [
        "      # operators, `sophia up` and the `nats` CLI: the whole account",
        f'      {{ user: "{ADMIN}", password: ${password_env(ADMIN)} }}',
        "    ]",
        "  }",
        f"  {SYSTEM_ACCOUNT} {{",
        f'    users: [ {{ user: "{SYSTEM_USER}", password: ${password_env(SYSTEM_USER)} }} ]',
        "  }",
        "}",
        f"system_account: {SYSTEM_ACCOUNT}",
    ]
    return "\n".join([*header, *body, *footer]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.nats.permissions", description="Print accounts.conf."
    )
    parser.add_argument("--prefix", default="sophia", help="the install's SOPHIA_PREFIX")
    args = parser.parse_args(argv)
    sys.stdout.write(render(args.prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
