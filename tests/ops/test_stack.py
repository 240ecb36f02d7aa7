"""Pure parts of the stack: which NATS URL gets a local server, redaction, restart policy."""

from __future__ import annotations

import pytest

from bus.config import Settings, load, redact_url
from bus.errors import ConfigError
from ops.stack import default_programs, local_nats_address
from ops.supervisor import CrashWindow, Policy


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("nats://127.0.0.1:4222", ("127.0.0.1", 4222)),
        ("nats://localhost:5000", ("127.0.0.1", 5000)),
        ("nats://127.0.0.1", ("127.0.0.1", 4222)),
        ("nats://user:pw@127.0.0.1:4223", ("127.0.0.1", 4223)),
        ("nats://nats.example.com:4222", None),
        ("tls://127.0.0.1:4222", None),
        ("nats://127.0.0.1:4222,nats://127.0.0.1:4223", None),
    ],
    ids=["loopback", "localhost", "default-port", "credentials", "remote", "tls", "cluster"],
)
def test_local_nats_address_only_for_one_plain_local_url(
    url: str, expected: tuple[str, int] | None
) -> None:
    assert local_nats_address(url) == expected


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://user:s3cret@host:4222", "nats://user:***@host:4222"),
        ("nats://host:4222", "nats://host:4222"),
    ],
    ids=["password", "none"],
)
def test_redact_url_hides_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_crash_window_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    window = CrashWindow(Policy(restart_backoff_s=1, restart_backoff_max_s=3, crash_limit=4))
    delays, gave_up = [], []
    for t in range(4):
        gave_up.append(window.record(float(t)))
        delays.append(window.backoff())
    assert delays == [1, 2, 3, 3]
    assert gave_up == [False, False, False, True]


def test_crash_window_forgets_crashes_older_than_the_window() -> None:
    window = CrashWindow(Policy(restart_backoff_s=1, crash_limit=2, crash_window_s=10))
    assert window.record(0.0) is False
    assert window.record(11.0) is False  # the first crash left the window
    assert window.backoff() == 1


def test_policy_reads_sophia_variables_and_names_a_bad_one() -> None:
    policy = load(Policy, {"SOPHIA_CRASH_LIMIT": "7", "SOPHIA_RESTART_BACKOFF_S": "0.1"})
    assert (policy.crash_limit, policy.restart_backoff_s) == (7, 0.1)
    with pytest.raises(ConfigError) as caught:
        load(Policy, {"SOPHIA_CRASH_LIMIT": "0"})
    assert caught.value.description.startswith("SOPHIA_CRASH_LIMIT:")


def test_default_programs_run_each_agent_module_with_pinned_settings() -> None:
    settings = Settings(home="/tmp/h", nats_url="nats://127.0.0.1:4999", prefix="px")
    programs = {p.name: p for p in default_programs(settings, ["planner", "coder"])}
    assert set(programs) == {"planner", "coder"}
    assert programs["coder"].argv[1:] == ("-m", "agents.coder")
    assert programs["coder"].env["SOPHIA_NATS_URL"] == "nats://127.0.0.1:4999"
    assert programs["coder"].env["SOPHIA_PREFIX"] == "px"
    with pytest.raises(ValueError, match="unknown program 'nope'"):
        default_programs(settings, ["nope"])
