"""Plans: the model's DAG checked before anything runs, and the order steps run in.

Guarantees of :func:`validated`: step ids are unique, every dependency names a step, no step
depends on itself or on a cycle, file paths stay inside the repository (relative, no ``..``,
nothing under ``.git``), and a code goal has at least one code step; anything else raises
PlanError naming the step. The pattern then shapes the plan: ``fast`` is one code step and
no review, ``balanced`` and ``quality`` end with a review of every code step (one is added when
the model planned none).

Running order (:func:`next_code_step`, :func:`ready`): steps run in dependency order; code
steps of one task run one at a time, because they commit to one branch, the earlier planned
first among those ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from bus.errors import BadRequestError
from bus.schemas.tasks import Pattern, Plan, Step

FINISHED = frozenset({"done", "skipped"})
REVIEW_ID = "review"


class PlanError(BadRequestError):
    """The model's plan breaks a rule; the text names the step and the rule."""


def fast_plan(goal: str) -> list[Step]:
    """The ``fast`` pattern's plan, made without a model call: one code step."""
    return [Step(id="code", capability="code", description=goal)]


def _clean_path(step: str, path: str) -> str:
    pure = PurePosixPath(path.strip().replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or ".git" in pure.parts or "\x00" in path:
        raise PlanError(f"plan: step {step!r} names a file outside the repository")
    return str(pure)


def _check_acyclic(steps: Sequence[Step]) -> None:
    depends = {s.id: list(s.depends_on) for s in steps}
    done: set[str] = set()
    visiting: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            raise PlanError(f"plan: step {node!r} is part of a dependency cycle")
        visiting.add(node)
        for dep in depends[node]:
            visit(dep)
        visiting.discard(node)
        done.add(node)

    for step in steps:
        visit(step.id)


def validated(plan: Plan, pattern: Pattern, *, code_goal: bool = True) -> list[Step]:
    """The plan's steps, checked and shaped for ``pattern``. Raises PlanError."""
    ids = [s.id for s in plan.steps]
    seen: set[str] = set()
    for step_id in ids:
        if step_id in seen:
            raise PlanError(f"plan: step id {step_id!r} is used twice")
        seen.add(step_id)
    steps: list[Step] = []
    for planned in plan.steps:
        for dep in planned.depends_on:
            if dep == planned.id:
                raise PlanError(f"plan: step {planned.id!r} depends on itself")
            if dep not in seen:
                raise PlanError(f"plan: step {planned.id!r} depends on {dep!r}, no such step")
        steps.append(
            Step(
                id=planned.id,
                capability=planned.capability,
                description=planned.description,
                files=sorted({_clean_path(planned.id, f) for f in planned.files}),
                depends_on=list(dict.fromkeys(planned.depends_on)),
            )
        )
    _check_acyclic(steps)
    code = [s.id for s in steps if s.capability == "code"]
    if code_goal and not code:
        raise PlanError("plan: a code goal needs at least one step with capability 'code'")
    return _shaped(steps, pattern)


def _shaped(steps: list[Step], pattern: Pattern) -> list[Step]:
    code = [s.id for s in steps if s.capability == "code"]
    if pattern == "fast":
        return [s for s in steps if s.capability != "review"]
    if pattern == "quality":
        return _reviewed_one_by_one(steps)
    reviewed = {dep for s in steps if s.capability == "review" for dep in s.depends_on}
    if code and not set(code) <= reviewed:
        last_review = REVIEW_ID if REVIEW_ID not in {s.id for s in steps} else f"{REVIEW_ID}-all"
        steps.append(
            Step(
                id=last_review,
                capability="review",
                description="Review the whole patch",
                depends_on=[s.id for s in steps if s.capability != "review"],
            )
        )
    return steps


def _reviewed_one_by_one(steps: list[Step]) -> list[Step]:
    """Quality: each code step gets a review of its own right after it (the reviewer picks
    between the two coders' candidates), and what depended on the code step depends on that
    review, so the next step starts from the picked commit. Planned review steps then have
    nothing left to do and are skipped."""
    taken = {s.id for s in steps}
    review_of: dict[str, str] = {}
    for step in steps:
        if step.capability == "code":
            name = f"{step.id}-review"
            while name in taken:
                name += "-"
            taken.add(name)
            review_of[step.id] = name
    shaped: list[Step] = []
    for step in steps:
        step.depends_on = [review_of.get(d, d) for d in step.depends_on]
        if step.capability == "review":
            step.state = "skipped"
            step.note = "in the quality pattern every code step is reviewed on its own"
        shaped.append(step)
        if step.id in review_of:
            shaped.append(
                Step(
                    id=review_of[step.id],
                    capability="review",
                    description=f"Pick the better candidate of step {step.id} and review it",
                    depends_on=[step.id],
                )
            )
    return shaped


def by_id(steps: Sequence[Step]) -> dict[str, Step]:
    return {s.id: s for s in steps}


def ready(steps: Sequence[Step]) -> list[Step]:
    """Pending steps whose dependencies have all finished, in planned order."""
    index = by_id(steps)
    return [
        s
        for s in steps
        if s.state == "pending" and all(index[d].state in FINISHED for d in s.depends_on)
    ]


def busy(steps: Sequence[Step], capability: str) -> bool:
    """Whether a step of ``capability`` is out with an agent now."""
    return any(s.capability == capability and s.state in ("dispatched", "running") for s in steps)


def code_steps_before(steps: Sequence[Step], review: Step) -> list[Step]:
    """The code steps a review step covers (directly or through its dependencies)."""
    index = by_id(steps)
    found: list[str] = []
    stack = list(review.depends_on)
    while stack:
        step = index[stack.pop()]
        if step.id in found:
            continue
        found.append(step.id)
        stack.extend(step.depends_on)
    return [s for s in steps if s.id in found and s.capability == "code"]


def progress(steps: Sequence[Step]) -> tuple[int, int]:
    """(finished, all) steps."""
    return sum(s.state in FINISHED for s in steps), len(steps)
