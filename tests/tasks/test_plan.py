"""Plans are checked before anything runs, and shaped by the pattern."""

from __future__ import annotations

import pytest

from bus.schemas.tasks import Plan, PlanStep
from tasks.plan import PlanError, code_steps_before, fast_plan, ready, validated


def step(
    id: str, capability: str = "code", depends_on: list[str] | None = None, **kw: object
) -> PlanStep:
    return PlanStep(
        id=id,
        capability=capability,
        description=f"do {id}",  # type: ignore[arg-type]
        depends_on=depends_on or [],
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([step("a"), step("a")], "used twice"),
        ([step("a", depends_on=["nope"])], "no such step"),
        ([step("a", depends_on=["a"])], "depends on itself"),
        ([step("a", depends_on=["b"]), step("b", depends_on=["a"])], "cycle"),
        ([step("r", "review")], "at least one step with capability 'code'"),
        ([step("a", files=["../etc/passwd"])], "outside the repository"),
        ([step("a", files=["/etc/passwd"])], "outside the repository"),
        ([step("a", files=[".git/config"])], "outside the repository"),
    ],
    ids=["duplicate", "missing", "self", "cycle", "no-code", "dotdot", "absolute", "git"],
)
def test_a_plan_that_breaks_a_rule_is_refused_naming_it(
    steps: list[PlanStep], problem: str
) -> None:
    with pytest.raises(PlanError, match=problem):
        validated(Plan(steps=steps), "balanced")


def test_balanced_adds_a_review_of_every_code_step() -> None:
    steps = validated(Plan(steps=[step("a"), step("b", depends_on=["a"])]), "balanced")
    assert [s.id for s in steps] == ["a", "b", "review"]
    review = steps[-1]
    assert review.capability == "review" and set(review.depends_on) == {"a", "b"}
    assert [s.id for s in code_steps_before(steps, review)] == ["a", "b"]


def test_fast_drops_reviews_and_its_own_plan_is_one_code_step() -> None:
    steps = validated(Plan(steps=[step("a"), step("r", "review", ["a"])]), "fast")
    assert [s.id for s in steps] == ["a"]
    assert [s.capability for s in fast_plan("goal")] == ["code"]


def test_quality_reviews_each_code_step_before_the_next_starts() -> None:
    steps = validated(
        Plan(steps=[step("a"), step("b", depends_on=["a"]), step("r", "review", ["b"])]),
        "quality",
    )
    by_id = {s.id: s for s in steps}
    assert by_id["a-review"].depends_on == ["a"]
    assert by_id["b"].depends_on == ["a-review"]  # b starts from a's picked commit
    assert by_id["r"].state == "skipped"
    assert [s.id for s in ready(steps)] == ["a"]
