"""ops/nats/: the production NATS configuration, and a real 3-node cluster started from it.

The committed ``accounts.conf`` is what :mod:`ops.nats.permissions` derives from the agents'
endpoint tables. Started from ``ops/nats/`` on loopback ports, the cluster lets each agent do
its own work with its own credentials and nothing else, and keeps every acknowledged work item
(``SOPHIA_WORK`` at R3) when the node leading that stream is killed, its clients back on
another node within 5 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from adapters.llm.config import SETUP_HINT
from agents.coder import CoderAgent
from agents.llm import LlmAgent
from agents.planner import PlannerAgent
from bus import Bus, UnavailableError
from bus.config import Settings, load
from bus.connection import Link, connect, credentials
from bus.errors import ConfigError, TimeoutError_
from bus.schemas import tasks as t
from bus.schemas.common import Empty
from bus.schemas.llm import CompleteRequest, CompleteResult, Message, ModelsResult
from bus.subjects import Subjects
from bus.topology import ensure_consumer, ensure_streams
from edge.config import EdgeSettings
from edge.runtime import open_edge
from ops.nats import permissions as perms
from tests.fixtures.nats_cluster import ClusterNode, NatsCluster
from tests.fixtures.nats_server import running
from tests.polling import wait_for

pytestmark = pytest.mark.anyio

ACCOUNTS = Path(__file__).resolve().parents[2] / "ops" / "nats" / "accounts.conf"
SUBJECTS = Subjects("sophia")  # accounts.conf is written for the default prefix
ITEMS = 60
RECONNECT_BOUND_S = 5.0
DENIED_WAIT_S = 1.0
FAST_DISCOVERY = EdgeSettings(edge_discovery_s=0.5, edge_discovery_window_s=0.1)
#: the refusals the test provokes, as the servers log them
PROVOKED = [
    'coder: Publish Violation Subject "sophia.tasks.submit"',  # the coder agent's own request
    'edge: Publish Violation Subject "sophia.tasks.health"',
    'coder: Publish Violation Subject "sophia.tasks.submit"',  # the probe's
    'coder: Subscription Violation Subject "sophia.memory.search"',
    'coder: Subscription Violation Subject "_INBOX.edge.>"',
]


# ---- the generated permissions ------------------------------------------------------------


def test_accounts_conf_is_what_the_agents_declare() -> None:
    assert ACCOUNTS.read_text() == perms.render(), (
        "ops/nats/accounts.conf is stale: run `python -m ops.nats.permissions "
        "> ops/nats/accounts.conf`"
    )


def test_permissions_let_the_edge_call_public_endpoints_only() -> None:
    table = perms.services()
    edge = next(p for p in perms.permissions() if p.user == perms.EDGE)
    public = {SUBJECTS.endpoint(s.name, e) for s in table for e in s.public}
    private = {SUBJECTS.endpoint(s.name, e) for s in table for e in s.endpoints} - public
    own = {SUBJECTS.event("edge", "audit"), SUBJECTS.event("edge", "cancel")}
    agents_subjects = {s for s in edge.publish if s.startswith("sophia.")}
    assert public <= agents_subjects
    assert agents_subjects - public == own
    assert not private & set(edge.publish)


def test_permissions_let_each_agent_serve_its_own_endpoints_only() -> None:
    for p in perms.permissions():
        served = {s for s in p.subscribe if s.startswith("sophia.") and ".events." not in s}
        assert served, p.user
        assert all(s.startswith(f"sophia.{p.user}.") for s in served), p.user
        assert all("*" not in s and ">" not in s for s in served), p.user
        inboxes = {s for s in p.subscribe if s.startswith("_INBOX.")}
        assert inboxes == {f"_INBOX.{p.user}.>"}, p.user


def test_permissions_refuse_a_call_no_agent_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(perms.NEEDS, "coder", perms.Needs(calls=(("memory", "nope"),)))
    with pytest.raises(ValueError) as caught:
        perms.permissions()
    assert "memory.nope" in str(caught.value)


def test_permissions_follow_the_install_prefix() -> None:
    text = perms.render("acme")
    assert '"acme.tasks.submit"' in text
    assert '"$JS.API.CONSUMER.MSG.NEXT.ACME_WORK.tasks"' in text
    assert "sophia." not in text


def test_settings_never_show_the_nats_password() -> None:
    settings = load(Settings, {"SOPHIA_NATS_USER": "llm", "SOPHIA_NATS_PASSWORD": "psecret42"})
    assert settings.nats_password == "psecret42"
    assert "psecret42" not in repr(settings)
    assert "nats_user='llm'" in repr(settings)


def test_credentials_present_the_user_with_inboxes_of_its_own() -> None:
    options = credentials(Settings(nats_user="llm", nats_password="psecret42"))
    assert options == {"user": "llm", "password": "psecret42", "inbox_prefix": "_INBOX.llm"}
    assert credentials(Settings()) == {}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SOPHIA_STREAM_REPLICAS", "7", "SOPHIA_STREAM_REPLICAS: must be a whole number from 1"),
        ("SOPHIA_NATS_USER", "a.b", "SOPHIA_NATS_USER: must be a NATS user name of letters"),
    ],
    ids=["replicas", "user"],
)
def test_settings_refuse_bad_cluster_values(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(Settings, {name: value})
    assert caught.value.description.startswith(message)


# ---- the cluster ---------------------------------------------------------------------------


def _no_model(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """The llm agent with no model configured: it serves, and ``complete`` answers 503."""
    for name in ("SOPHIA_LLM_BASE_URL", "SOPHIA_LLM_MODEL", "PORTKEY_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    empty = home / "empty.toml"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_text("")
    monkeypatch.setenv("SOPHIA_CONFIG", str(empty))


@asynccontextmanager
async def client_bus(settings: Settings, name: str) -> AsyncIterator[Bus]:
    """An operator's bus (``sophia up``, the CLI): its own credentials, its own Link."""
    link = Link()
    nc = await connect(settings, name, link)
    try:
        yield Bus(nc, settings, link)
    finally:
        await nc.close()


@asynccontextmanager
async def probe(
    cluster: NatsCluster, user: str, node: ClusterNode
) -> AsyncIterator[tuple[Client, list[str]]]:
    """A bare nats-py client logged in as ``user``; the errors the server sends it."""
    errors: list[str] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(
        node.url,
        user=user,
        password=cluster.passwords[user],
        inbox_prefix=f"_INBOX.{user}",
        error_cb=error_cb,
        allow_reconnect=False,
    )
    try:
        yield nc, errors
    finally:
        await nc.close()


async def _leaders(js: JetStreamContext, streams: list[str], gone: str, limit_s: float) -> None:
    """Wait until every stream has a leader other than ``gone`` (elections follow a death)."""
    with anyio.fail_after(limit_s):
        for stream in streams:
            while True:
                try:
                    info = await js.stream_info(stream)
                except (nats.errors.Error, nats.js.errors.Error):
                    info = None
                cluster = info.cluster if info else None
                if cluster is not None and cluster.leader not in (None, gone):
                    break
                await anyio.sleep(0.1)


def _all_streams() -> list[str]:
    s = SUBJECTS
    kv = [s.tasks_bucket, s.sessions_bucket, s.config_bucket, s.budgets_bucket]
    return [s.work_stream, s.events_stream, s.dlq_stream, *(f"KV_{b}" for b in kv)]


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(180)
async def test_cluster_serves_agents_with_own_credentials_and_keeps_work_through_a_node_kill(
    nats_cluster: NatsCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = nats_cluster
    _no_model(monkeypatch, tmp_path)
    everywhere = ",".join(n.url for n in cluster.nodes)
    admin_settings = cluster.settings("admin", cluster.nodes[0], tmp_path / "admin",
                                      nats_url=everywhere)  # fmt: skip
    async with AsyncExitStack() as stack:
        admin = await stack.enter_async_context(client_bus(admin_settings, "test-admin"))
        await ensure_streams(admin.js, admin_settings)  # what `sophia up` does first
        await ensure_consumer(admin.js, admin_settings, "tasks")
        work = await admin.js.stream_info(SUBJECTS.work_stream)
        assert work.config.num_replicas == 3
        assert work.cluster is not None and work.cluster.leader is not None
        leader = cluster.node_named(work.cluster.leader)

        def own(user: str, node: ClusterNode = leader) -> Settings:
            return cluster.settings(user, node, tmp_path / user)

        llm = await stack.enter_async_context(running(LlmAgent(own("llm"))))
        coder = await stack.enter_async_context(running(CoderAgent(own("coder"))))
        edge_runtime = await stack.enter_async_context(open_edge(own("edge"), FAST_DISCOVERY))
        edge = edge_runtime.bus

        # -- each works with its own credentials, end to end --------------------------------
        async with running(PlannerAgent(own("tasks"))):
            await wait_for(lambda: edge_runtime.catalog.get("tasks", "list") is not None)
            listed = await edge.request("tasks", "list", t.ListRequest(), t.TaskList)
            assert listed.tasks == []
            models = await edge.request("llm", "models", Empty(), ModelsResult)
            assert models.configured is False
            ask = CompleteRequest(messages=[Message(role="user", content="hi")])
            with pytest.raises(UnavailableError) as answered:  # llm's own answer: no model
                await coder.bus.request("llm", "complete", ask, CompleteResult)
            assert answered.value.description == SETUP_HINT

            # -- and nothing else: the server refuses, the request gets nothing -------------
            with pytest.raises(TimeoutError_):  # planner is up: allowed, it would answer 400
                await coder.bus.request_raw(
                    SUBJECTS.endpoint("tasks", "submit"), b"{}", timeout=DENIED_WAIT_S
                )
            with pytest.raises(TimeoutError_):  # not public: the edge may not call it
                await edge.request_raw(
                    SUBJECTS.endpoint("tasks", "health"), b"{}", timeout=DENIED_WAIT_S
                )
            async with probe(cluster, "coder", leader) as (nc, errors):
                await nc.publish(SUBJECTS.endpoint("tasks", "submit"), b"{}")
                await nc.subscribe(SUBJECTS.endpoint("memory", "search"))
                await nc.subscribe("_INBOX.edge.>")  # another user's replies
                await nc.flush()
                await wait_for(lambda: len(errors) >= 3)
            assert errors == [
                'nats: permissions violation for publish to "sophia.tasks.submit"',
                'nats: permissions violation for subscription to "sophia.memory.search"',
                'nats: permissions violation for subscription to "_inbox.edge.>"',
            ]
            assert llm.link.connected and coder.link.connected  # denials close nothing

        # -- SOPHIA_WORK at R3 keeps every acknowledged item when its leader dies ----------
        sent: dict[int, bytes] = {}
        for i in range(ITEMS):
            item = t.Advance(task_id=f"gone{i:04d}", why="failover")
            ack = await coder.bus.submit_work("tasks", item, msg_id=f"failover-{i}")
            sent[ack.seq] = item.task_id.encode()
        assert len(sent) == ITEMS

        back: dict[str, float] = {}
        clients = {"llm": llm.link, "coder": coder.link, "edge": edge_runtime.link}
        for who, link in clients.items():
            link.on_back(lambda who=who: back.setdefault(who, time.monotonic()))
        current = await admin.js.stream_info(SUBJECTS.work_stream)
        was_leader = current.cluster is not None and current.cluster.leader == leader.name
        killed_at = time.monotonic()
        cluster.kill(leader)
        with anyio.fail_after(RECONNECT_BOUND_S):
            while len(back) < len(clients):  # noqa: ASYNC110 — nats-py's callbacks fill it
                await anyio.sleep(0.01)
        reconnect_s = {who: round(at - killed_at, 3) for who, at in sorted(back.items())}

        await _leaders(admin.js, _all_streams(), leader.name, limit_s=30)
        elected_s = round(time.monotonic() - killed_at, 3)
        kept = await admin.js.stream_info(SUBJECTS.work_stream)
        assert kept.state.messages == ITEMS
        for seq, task_id in sent.items():
            stored = await admin.js.get_msg(SUBJECTS.work_stream, seq)
            assert task_id in (stored.data or b"")

        survivor = next(n for n in cluster.nodes if n.running)
        async with running(PlannerAgent(own("tasks", survivor))) as planner:
            await _drained(admin, planner)
            listed = await edge.request("tasks", "list", t.ListRequest(), t.TaskList)
            assert listed.tasks == []  # the edge, back, still reaches the planner
        dlq = await admin.js.stream_info(SUBJECTS.dlq_stream)
        assert dlq.state.messages == 0
        print(
            json.dumps(
                {
                    "figure": "nats_cluster_failover",
                    "killed": leader.name,
                    "killed_was_work_leader": was_leader,
                    "reconnect_s": reconnect_s,
                    "reconnect_max_s": max(reconnect_s.values()),
                    "leaders_elected_s": elected_s,
                    "acknowledged": ITEMS,
                    "kept": kept.state.messages,
                }
            )
        )
    refused = sorted(line for n in cluster.nodes for line in _violations(cluster.log_text(n)))
    assert refused == sorted(PROVOKED)  # the agents and the edge never hit a refusal of their own


def _violations(log: str) -> list[str]:
    """``user: what`` for each permissions violation a node logged."""
    found = []
    for line in log.splitlines():
        if "Violation - Subject" in line and "SOPHIA/user:" in line:
            user = line.split("SOPHIA/user:", 1)[1].split('"', 1)[0]
            what = line.split(" - ")[-2:]
            found.append(f"{user}: {what[0]} {what[1].split(', SID')[0]}")
    return found


async def _drained(admin: Bus, planner: PlannerAgent) -> None:
    """Wait until the planner has taken and acked every item (the work queue is empty)."""
    with anyio.fail_after(30):
        while True:
            info = await admin.js.stream_info(SUBJECTS.work_stream)
            consumer = await admin.js.consumer_info(SUBJECTS.work_stream, "tasks")
            if info.state.messages == 0 and consumer.num_ack_pending == 0:
                break
            await anyio.sleep(0.1)
    assert planner._consumer is not None and planner._consumer.acked >= ITEMS
