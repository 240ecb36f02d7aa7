"""Task records are redacted where every change passes: model answers and tool output land in
them (a plan step's description, review findings and evidence, bandit's messages)."""

from __future__ import annotations

import msgspec

from bus.schemas import tasks as t
from tasks.redaction import redact_record
from tests.security.canaries import CanarySet, leaks


def _record(canaries: CanarySet) -> t.TaskRecord:
    line = canaries.line("marker")
    found = t.ToolFindingRecord(
        id="bandit-1",
        tool="bandit",
        file="settings.py",
        line=4,
        code="B105",
        message=f"Possible hardcoded password: '{canaries.github_token.value}'",
    )
    finding = t.Finding(
        file="settings.py",
        line=4,
        message=f"hard-coded secret: {line}",
        evidence=f'AWS_SECRET_ACCESS_KEY = "{canaries.aws_secret.value}"',
    )
    tool = t.ToolRunRecord(tool="bandit", ran=True, ok=False, findings=[found], summary=line)
    review = t.Review(verdict="approve", accepted=True, findings=[finding], tools=[tool], note=line)
    step = t.Step(
        id="s1",
        capability="code",
        description=f"edit total; {line}",
        files=["settings.py"],
        error=canaries.private_key.value,
    )
    return t.TaskRecord(
        task_id="c9e318d4042b4d7d",
        goal="tidy total()",
        repo="/home/me/src/billing",
        namespace="billing",
        pattern="balanced",
        base="HEAD",
        base_commit="51a855023dd7ac2cb12a27c85318231e99112381",
        plan=[step, t.Step(id="review", capability="review", description="", review=review)],
        findings=[finding],
        branch="sophia/c9e318d4042b4d7d",
        commits=["00724b5242bfbfaad0007df9974d8bc647b5dabe"],
        timings={"plan_s": 0.5},
    )


def test_redact_record_leaves_no_canary_in_any_field() -> None:
    canaries = CanarySet.fresh()
    record = _record(canaries)
    assert leaks(msgspec.json.encode(record), canaries.all) != []  # planted
    clean = redact_record(record)
    assert leaks(msgspec.json.encode(clean), canaries.all) == []
    assert "[REDACTED:" in clean.plan[0].description and "marker" in clean.plan[0].description


def test_redact_record_keeps_identifiers_and_numbers() -> None:
    record = _record(CanarySet.fresh())
    clean = redact_record(record)
    kept = ("task_id", "repo", "namespace", "base_commit", "branch", "commits", "timings")
    assert {f: getattr(clean, f) for f in kept} == {f: getattr(record, f) for f in kept}
    assert [s.files for s in clean.plan] == [s.files for s in record.plan]
    assert clean.findings[0].file == "settings.py" and clean.findings[0].line == 4


def test_redact_record_without_secrets_is_the_same_object() -> None:
    record = t.TaskRecord(
        task_id="a1", goal="add a flag", repo="/r", namespace="r", pattern="fast", base="HEAD"
    )
    assert redact_record(record) is record
