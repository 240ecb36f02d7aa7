"""Wire schemas of the infra agent (``sophia.infra.*``) and its audit events.

A *stack* here is a Pulumi program: a directory under ``infra/stacks/`` with a ``Pulumi.yaml``
(``sophia_k8s``); ``env`` picks the Pulumi stack of that program (``dev``, ``prod``; empty: the
agent's default). ``confirm`` must equal ``stack`` for ``up``, ``destroy`` and ``scale`` on a
protected stack. A long operation runs on after ``wait_s``: the reply then says ``running``
and the outcome lands in the audit trail (``<prefix>.events.infra.<stack>``, one
:class:`InfraEvent` per phase, ``Nats-Msg-Id`` ``<op_id>-<phase>``) and in ``stacks``.

Progress: a request's ``progress_subject`` (an inbox) gets one
:class:`~bus.schemas.edge.CallProgress` per engine step, which the edge relays as MCP
progress. No value of a secret (Pulumi config marked secret, secret outputs) is ever in a
reply, an event or a progress report: outputs show ``[secret]``.

Evolution rules (msgspec's): new fields get defaults, a field never changes type.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from bus.limits import CONFIRM_CHARS, Subject
from bus.subjects import TOKEN_PATTERN

SECRET_MASK = "[secret]"

StackName = Annotated[
    str,
    msgspec.Meta(
        pattern=TOKEN_PATTERN,
        max_length=64,
        description="a program under infra/stacks: letters, digits, '_' or '-'",
    ),
]
EnvName = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^([A-Za-z0-9_.-]{1,100})?$",
        description="a Pulumi stack name (letters, digits, '_', '-', '.'); empty: the default",
    ),
]
AgentName = Annotated[str, msgspec.Meta(pattern=TOKEN_PATTERN, max_length=64)]
WaitS = Annotated[float, msgspec.Meta(ge=0, le=3600)]
Confirm = Annotated[str, msgspec.Meta(max_length=CONFIRM_CHARS)]
Operation = Literal["preview", "up", "refresh", "destroy", "scale"]
Phase = Literal["started", "succeeded", "failed"]


class StacksRequest(msgspec.Struct, kw_only=True):
    """List the stack programs (no input)."""


class LastResult(msgspec.Struct, kw_only=True):
    """The latest finished (or started) operation on a stack, from its audit trail."""

    op_id: str
    operation: str
    env: str
    phase: str
    at: float
    message: str = ""


class StackInfo(msgspec.Struct, kw_only=True):
    name: str
    protected: bool
    path: str  # the program's directory
    running: bool = False  # an operation holds the stack's lock now
    last: LastResult | None = None


class StackList(msgspec.Struct, kw_only=True):
    stacks: list[StackInfo]
    pulumi: str  # "available" or what to install


class OperationRequest(msgspec.Struct, kw_only=True):
    """Preview, update, refresh or destroy one stack."""

    stack: StackName
    env: EnvName = ""
    confirm: Confirm = ""  # the stack's name, for up/destroy on a protected stack
    wait_s: WaitS = 50.0  # answer after this long at most; the operation runs on
    progress_subject: Subject = ""  # an inbox: CallProgress per engine step


class ScaleRequest(msgspec.Struct, kw_only=True):
    """Set one agent's replica count (stack config ``replicas.<agent>``) and run ``up``."""

    stack: StackName
    agent: AgentName
    replicas: Annotated[int, msgspec.Meta(ge=0, le=100)]
    env: EnvName = ""
    confirm: Confirm = ""
    wait_s: WaitS = 50.0
    progress_subject: Subject = ""


class OperationResult(msgspec.Struct, kw_only=True):
    op_id: str
    stack: str
    env: str
    operation: str
    state: Literal["succeeded", "failed", "running"]
    changes: dict[str, int] = msgspec.field(default_factory=dict)  # op → count
    steps: int = 0  # engine steps seen
    message: str = ""  # why it failed (secrets masked), or a summary


class OutputsRequest(msgspec.Struct, kw_only=True):
    stack: StackName
    env: EnvName = ""


class OutputValue(msgspec.Struct, kw_only=True):
    value: Any  # SECRET_MASK when secret
    secret: bool = False


class Outputs(msgspec.Struct, kw_only=True):
    stack: str
    env: str
    outputs: dict[str, OutputValue]


class InfraEvent(msgspec.Struct, kw_only=True):
    """One phase of one operation, on ``<prefix>.events.infra.<stack>`` (the audit trail)."""

    op_id: str
    stack: str
    env: str
    operation: str
    phase: Phase
    at: float  # unix seconds
    changes: dict[str, int] = msgspec.field(default_factory=dict)
    message: str = ""
    detail: dict[str, str] = msgspec.field(default_factory=dict)  # e.g. agent, replicas
