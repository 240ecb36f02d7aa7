"""Declaring agents: bad handler signatures fail at class creation, naming the method."""

from __future__ import annotations

import msgspec
import pytest

from bus import Agent, endpoint, work
from bus.subjects import Subjects, srv


class In(msgspec.Struct):
    x: int


class Out(msgspec.Struct):
    y: int


def test_declaration_builds_routing_table() -> None:
    class Good(Agent, name="good"):
        @endpoint(subject="a.b", public=True)
        async def ab(self, req: In) -> Out:
            """Doc."""
            return Out(y=req.x)

    assert set(Good._endpoints) == {"ab", "health"}
    spec = Good._endpoints["ab"]
    assert (spec.name, spec.subject_tail, spec.public, spec.description) == (
        "a_b",
        "a.b",
        True,
        "Doc.",
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def m(self, req: In) -> Out: ...", "Bad.m: a handler must be an `async def` method"),
        ("async def m(self) -> Out: ...", "Bad.m: a handler takes exactly one argument"),
        ("async def m(self, req: int) -> Out: ...", "Bad.m: the argument must be annotated"),
        ("async def m(self, req: In): ...", "Bad.m: the return type must be annotated"),
        ("async def m(self, req: In) -> dict: ...", "Bad.m: the return type must be a msgspec"),
    ],
    ids=["not-async", "no-argument", "not-a-struct", "no-return", "return-not-struct"],
)
def test_declaration_bad_signature_names_the_method(source: str, message: str) -> None:
    namespace: dict = {"In": In, "Out": Out}
    exec(source, namespace)
    with pytest.raises(TypeError) as caught:
        type("Bad", (Agent,), {"m": endpoint(namespace["m"])}, name="bad")
    assert str(caught.value).startswith(message)


def test_declaration_work_handler_must_return_none() -> None:
    async def handle(self: Agent, item: In) -> Out: ...

    with pytest.raises(TypeError, match=r"Bad\.handle: a work handler returns None"):
        type("Bad", (Agent,), {"handle": work(handle)}, name="bad")


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda s: s.endpoint("memory", "search"), "sophia.memory.search"),
        (lambda s: s.endpoint("memory", "session.save"), "sophia.memory.session.save"),
        (lambda s: s.work("coder"), "sophia.work.coder"),
        (lambda s: s.event("task", "t1"), "sophia.events.task.t1"),
        (lambda s: s.dlq("coder"), "sophia.dlq.coder"),
        (lambda s: s.work_stream, "SOPHIA_WORK"),
        (lambda s: s.events_stream, "SOPHIA_EVENTS"),
        (lambda s: s.dlq_stream, "SOPHIA_DLQ"),
        (lambda s: s.tasks_bucket, "sophia_tasks"),
        (lambda s: s.sessions_bucket, "sophia_sessions"),
        (lambda s: s.config_bucket, "sophia_config"),
    ],
    ids=["endpoint", "dotted", "work", "event", "dlq", "ws", "es", "ds", "tasks", "sess", "cfg"],
)
def test_subjects_default_names(call, expected: str) -> None:  # type: ignore[no-untyped-def]
    assert call(Subjects()) == expected


@pytest.mark.parametrize(
    "bad", ["a b", "a.b", "*", ">", ""], ids=["space", "dot", "star", "gt", "empty"]
)
def test_subjects_reject_bad_tokens(bad: str) -> None:
    with pytest.raises(ValueError, match="service"):
        Subjects().work(bad)


def test_subjects_srv_control_subjects() -> None:
    assert srv("PING") == "$SRV.PING"
    assert srv("INFO", "memory") == "$SRV.INFO.memory"
    assert srv("STATS", "memory", "abc") == "$SRV.STATS.memory.abc"


def test_endpoint_access_must_be_read_or_nothing() -> None:
    with pytest.raises(TypeError, match="endpoint access 'write': must be '' or 'read'"):
        endpoint(access="write")
