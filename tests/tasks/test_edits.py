"""SEARCH/REPLACE edits: parsing, matching, refusals, all-or-nothing writes, and the eval set."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bench.edits import load_cases, run_case
from tasks.edits import (
    BlockFailure,
    EditBlock,
    apply_blocks,
    failure_key,
    failure_report,
    parse_blocks,
)

FENCE = "```"


def block(path: str | None, search: str, replace: str, lang: str = "python") -> str:
    head = f"{path}\n" if path else ""
    body = f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"
    return f"{head}{FENCE}{lang}\n{body}{FENCE}\n"


def edit(path: str, search: str, replace: str, index: int = 0) -> EditBlock:
    return EditBlock(path, search, replace, index)


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, newline="")
    return root


def read(path: Path) -> str:
    return path.read_bytes().decode()


# ---- the evaluation set, as a regression test

CASES = load_cases()


def test_the_set_is_large_and_named_uniquely() -> None:
    names = [c["name"] for c in CASES]
    assert len(CASES) >= 40
    assert len(names) == len(set(names))
    assert {c["expect"] for c in CASES} == {"apply", "refuse"}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict) -> None:
    result = run_case(case)
    assert not result["wrong"], result
    assert result["right"], result


# ---- parsing


def test_parse_one_block() -> None:
    blocks, problems = parse_blocks("Intro text.\n\napp.py\n" + block(None, "a = 1\n", "a = 2\n"))
    assert problems == []
    assert blocks == [EditBlock("app.py", "a = 1\n", "a = 2\n", 0)]


def test_parse_path_inside_the_fence() -> None:
    answer = "```python\nsrc/x.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n```\n"
    blocks, problems = parse_blocks(answer)
    assert not problems
    assert [(b.path, b.search, b.replace) for b in blocks] == [("src/x.py", "a\n", "b\n")]


@pytest.mark.parametrize(
    "line",
    ["**src/x.py**", "`src/x.py`", "src/x.py:", "**`src/x.py`**:", "### src/x.py", "  src/x.py  "],
)
def test_parse_strips_decorations_from_the_path(line: str) -> None:
    blocks, _ = parse_blocks(f"{line}\n" + block(None, "a\n", "b\n"))
    assert [b.path for b in blocks] == ["src/x.py"]


def test_several_blocks_share_one_path_line() -> None:
    one_fence = "a.py\n```\n<<<<<<< SEARCH\n1\n=======\n2\n>>>>>>> REPLACE\n"
    one_fence += "<<<<<<< SEARCH\n3\n=======\n4\n>>>>>>> REPLACE\n```\n"
    separate = "b.py\n" + block(None, "5\n", "6\n") + "\nthen\n\n" + block(None, "7\n", "8\n")
    blocks, problems = parse_blocks(one_fence + "\n" + separate)
    assert not problems
    assert [(b.path, b.index) for b in blocks] == [
        ("a.py", 0),
        ("a.py", 1),
        ("b.py", 2),
        ("b.py", 3),
    ]


def test_new_file_block_has_an_empty_search() -> None:
    blocks, _ = parse_blocks(block("new.py", "", "x = 1\n"))
    assert blocks == [EditBlock("new.py", "", "x = 1\n", 0)]


def test_crlf_answer_is_read_as_lines() -> None:
    blocks, _ = parse_blocks(block("a.py", "x\n", "y\n").replace("\n", "\r\n"))
    assert [(b.search, b.replace) for b in blocks] == [("x\n", "y\n")]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("a.py\n```\n<<<<<<< SEARCH\nx\n>>>>>>> REPLACE\n```\n", "no ======="),
        ("a.py\n```\n<<<<<<< SEARCH\nx\n```\n", "no ======="),
        ("a.py\n```\n<<<<<<< SEARCH\nx\n=======\ny\n```\n", "no >>>>>>> REPLACE"),
        ("Do this:\n```\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n```\n", "no file path"),
        ("a.py\n```\nx\n=======\ny\n>>>>>>> REPLACE\n```\n", "without its SEARCH"),
    ],
)
def test_malformed_blocks_are_problems(answer: str, reason: str) -> None:
    blocks, problems = parse_blocks(answer)
    assert blocks == []
    assert len(problems) == 1
    assert reason in problems[0].reason


def test_a_malformed_block_does_not_hide_the_next_one() -> None:
    bad = "a.py\n```\n<<<<<<< SEARCH\n" + "x" * 2000 + "\n=======\ny\n```\n"
    blocks, problems = parse_blocks(bad + "\nb.py\n" + block(None, "1\n", "2\n"))
    assert [(p.index, len(p.excerpt) <= 300) for p in problems] == [(0, True)]
    assert [(b.path, b.index) for b in blocks] == [("b.py", 1)]


def test_content_with_fences_inside_a_block() -> None:
    answer = "README.md\n````\n<<<<<<< SEARCH\n```sh\nmake\n```\n=======\n```sh\nmake up\n```\n"
    blocks, _ = parse_blocks(answer + ">>>>>>> REPLACE\n````\n")
    assert blocks[0].search == "```sh\nmake\n```\n"


# ---- applying


def test_exact_edit_is_written(tmp_path: Path) -> None:
    tree(tmp_path, {"a.py": "x = 1\ny = 2\n"})
    outcome = apply_blocks(tmp_path, [edit("a.py", "y = 2\n", "y = 3\n")])
    assert outcome.ok and outcome.changed == ("a.py",) and outcome.created == ()
    assert outcome.drift == 0 and len(outcome.applied) == 1
    assert read(tmp_path / "a.py") == "x = 1\ny = 3\n"


def test_later_blocks_see_earlier_results(tmp_path: Path) -> None:
    tree(tmp_path, {"a.py": "x = 1\n"})
    blocks = [edit("a.py", "x = 1\n", "x = 2\n", 0), edit("./a.py", "x = 2\n", "x = 3\n", 1)]
    assert apply_blocks(tmp_path, blocks).changed == ("a.py",)
    assert read(tmp_path / "a.py") == "x = 3\n"


def test_new_file_and_its_parents(tmp_path: Path) -> None:
    outcome = apply_blocks(tmp_path, [edit("p/q/new.py", "", "A = 1\n")])
    assert outcome.created == ("p/q/new.py",) and outcome.changed == ("p/q/new.py",)
    assert read(tmp_path / "p/q/new.py") == "A = 1\n"
    assert stat.S_IMODE((tmp_path / "p/q/new.py").stat().st_mode) == 0o644


def test_drift_reindents_replace_when_search_is_less_indented(tmp_path: Path) -> None:
    tree(tmp_path, {"c.py": "class C:\n    def f(self):\n        return 1\n"})
    search, replace = "def f(self):\n    return 1\n", "def f(self):\n    x = 1\n\n    return x\n"
    outcome = apply_blocks(tmp_path, [edit("c.py", search, replace)])
    assert outcome.ok and outcome.drift == 1
    assert (
        read(tmp_path / "c.py") == "class C:\n    def f(self):\n        x = 1\n\n        return x\n"
    )


def test_drift_reindents_replace_when_search_is_more_indented(tmp_path: Path) -> None:
    tree(tmp_path, {"f.py": "def f():\n\treturn 1\n"})
    outcome = apply_blocks(
        tmp_path, [edit("f.py", "\tdef f():\n\t\treturn 1\n", "\tdef f():\n\t\treturn 2\n")]
    )
    assert outcome.drift == 1
    assert read(tmp_path / "f.py") == "def f():\n\treturn 2\n"


def test_exact_match_wins_over_drift(tmp_path: Path) -> None:
    tree(tmp_path, {"m.py": "    go()\ngo()\n"})
    outcome = apply_blocks(tmp_path, [edit("m.py", "go()\n", "stop()\n")])
    assert outcome.drift == 0
    assert read(tmp_path / "m.py") == "    go()\nstop()\n"


def test_drift_must_be_unique(tmp_path: Path) -> None:
    tree(tmp_path, {"m.py": "if a:\n    go()\nif b:\n        go()\n"})
    outcome = apply_blocks(tmp_path, [edit("m.py", "  go()\n", "  stop()\n")])
    assert [f.refusal for f in outcome.failures] == ["ambiguous"]


def test_spurious_blank_lines_are_dropped_from_both_sides(tmp_path: Path) -> None:
    tree(tmp_path, {"b.py": "a = 1\nb = 2\n"})
    outcome = apply_blocks(tmp_path, [edit("b.py", "\nb = 2\n\n", "\nb = 3\n\n")])
    assert outcome.ok and outcome.drift == 1
    assert read(tmp_path / "b.py") == "a = 1\nb = 3\n"


def test_line_endings_and_missing_final_newline_are_kept(tmp_path: Path) -> None:
    tree(tmp_path, {"w.py": "a\r\nb\r\n", "n.py": "a\nb"})
    blocks = [edit("w.py", "a\n", "a\nz\n", 0), edit("n.py", "b\n", "c\n", 1)]
    assert apply_blocks(tmp_path, blocks).ok
    assert read(tmp_path / "w.py") == "a\r\nz\r\nb\r\n"
    assert read(tmp_path / "n.py") == "a\nc"


def test_replace_is_literal(tmp_path: Path) -> None:
    tree(tmp_path, {"r.py": "P = 0\n"})
    new = "P = r'(\\d+)$'  # \\1 \\g<0> $& \\\\ \t \n"
    assert apply_blocks(tmp_path, [edit("r.py", "P = 0\n", new)]).ok
    assert read(tmp_path / "r.py") == new


def test_mode_is_kept_and_no_temp_file_is_left(tmp_path: Path) -> None:
    tree(tmp_path, {"run.sh": "echo 1\n"})
    (tmp_path / "run.sh").chmod(0o755)
    assert apply_blocks(tmp_path, [edit("run.sh", "echo 1\n", "echo 2\n")]).ok
    assert stat.S_IMODE((tmp_path / "run.sh").stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.sh"]


def test_a_symlink_inside_the_worktree_edits_its_target(tmp_path: Path) -> None:
    tree(tmp_path, {"real.py": "A = 1\n"})
    os.symlink("real.py", tmp_path / "alias.py")
    outcome = apply_blocks(tmp_path, [edit("alias.py", "A = 1\n", "A = 2\n")])
    assert outcome.changed == ("real.py",)
    assert (tmp_path / "alias.py").is_symlink() and read(tmp_path / "real.py") == "A = 2\n"


def test_all_or_nothing(tmp_path: Path) -> None:
    tree(tmp_path, {"a.py": "x = 1\n", "b.py": "y = 1\n"})
    blocks = [
        edit("a.py", "x = 1\n", "x = 2\n", 0),
        edit("new.py", "", "N = 1\n", 1),
        edit("b.py", "y = 9\n", "y = 2\n", 2),
    ]
    outcome = apply_blocks(tmp_path, blocks)
    assert not outcome.ok
    assert (outcome.applied, outcome.changed, outcome.created, outcome.drift) == ((), (), (), 0)
    assert [f.block.index for f in outcome.failures] == [2]
    assert read(tmp_path / "a.py") == "x = 1\n" and not (tmp_path / "new.py").exists()


def test_dry_run_reports_but_writes_nothing(tmp_path: Path) -> None:
    tree(tmp_path, {"a.py": "x = 1\n"})
    blocks = [edit("a.py", "x = 1\n", "x = 2\n", 0), edit("n.py", "", "N = 1\n", 1)]
    outcome = apply_blocks(tmp_path, blocks, dry_run=True)
    assert outcome.ok and outcome.changed == ("a.py", "n.py") and outcome.created == ("n.py",)
    assert read(tmp_path / "a.py") == "x = 1\n" and not (tmp_path / "n.py").exists()


FILES = {"a.py": "def f():\n    return 1\n\n\ndef g():\n    return 1\n", "e.py": ""}


@pytest.mark.parametrize(
    ("path", "search", "replace", "refusal"),
    [
        ("a.py", "def h():\n", "def k():\n", "not_found"),
        ("a.py", "def f():\n    return 2\n", "def f():\n    return 3\n", "not_found"),
        ("a.py", "    return 1\n", "    return 2\n", "ambiguous"),
        ("a.py", "1: def f():\n2:     return 1\n", "def f():\n    return 2\n", "line_numbers"),
        ("a.py", "  1 | def f():\n", "def f2():\n", "line_numbers"),
        ("a.py", "1\tdef f():\n", "def f2():\n", "line_numbers"),
        ("a.py", "def f():\n", "def f():\n", "no_change"),
        ("/etc/passwd", "root\n", "toor\n", "outside_worktree"),
        ("../a.py", "x\n", "y\n", "outside_worktree"),
        ("a\x00.py", "x\n", "y\n", "outside_worktree"),
        ("~/a.py", "x\n", "y\n", "outside_worktree"),
        (".git/config", "x\n", "y\n", "git_dir"),
        ("sub/.GIT/HEAD", "", "ref\n", "git_dir"),
        ("missing.py", "x\n", "y\n", "missing_file"),
        ("a.py", "", "new\n", "file_exists"),
        ("a.py/b.py", "", "x\n", "file_exists"),
    ],
)
def test_refusals(tmp_path: Path, path: str, search: str, replace: str, refusal: str) -> None:
    tree(tmp_path, FILES)
    outcome = apply_blocks(tmp_path, [edit(path, search, replace)])
    assert [f.refusal for f in outcome.failures] == [refusal]
    assert path in outcome.failures[0].reason or refusal == "outside_worktree"
    assert read(tmp_path / "a.py") == FILES["a.py"]


def test_a_creation_over_an_empty_file_is_allowed(tmp_path: Path) -> None:
    tree(tmp_path, FILES)
    assert apply_blocks(tmp_path, [edit("e.py", "", "E = 1\n")]).ok
    assert read(tmp_path / "e.py") == "E = 1\n"


def test_line_numbers_that_are_in_the_file_match(tmp_path: Path) -> None:
    tree(tmp_path, {"data.txt": "1 apple\n2 pear\n"})
    assert apply_blocks(tmp_path, [edit("data.txt", "2 pear\n", "2 plum\n")]).ok


def test_binary_and_not_utf8_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "b.bin").write_bytes(b"ab\x00cd\n")
    (tmp_path / "l.txt").write_bytes(b"caf\xe9\n")
    blocks = [edit("b.bin", "ab\n", "x\n", 0), edit("l.txt", "caf\n", "x\n", 1)]
    outcome = apply_blocks(tmp_path, blocks)
    assert [f.refusal for f in outcome.failures] == ["binary", "not_utf8"]


def test_a_symlink_out_of_the_worktree_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    tree(outside, {"o.py": "x = 1\n"})
    os.symlink(outside, root / "link")
    blocks = [edit("link/o.py", "x = 1\n", "x = 2\n", 0), edit("link/n.py", "", "n\n", 1)]
    outcome = apply_blocks(root, blocks)
    assert [f.refusal for f in outcome.failures] == ["outside_worktree"] * 2
    assert read(outside / "o.py") == "x = 1\n" and not (outside / "n.py").exists()


def test_a_near_miss_gets_a_did_you_mean_and_is_not_applied(tmp_path: Path) -> None:
    tree(tmp_path, FILES)
    outcome = apply_blocks(
        tmp_path, [edit("a.py", "def g():\n    retrun 1\n", "def g():\n    return 2\n")]
    )
    (failure,) = outcome.failures
    assert failure.refusal == "not_found"
    assert failure.did_you_mean == "def g():\n    return 1\n"
    assert read(tmp_path / "a.py") == FILES["a.py"]


def test_nothing_close_means_no_did_you_mean(tmp_path: Path) -> None:
    tree(tmp_path, FILES)
    (failure,) = apply_blocks(tmp_path, [edit("a.py", "zzzz qqqq wwww\n", "x\n")]).failures
    assert failure.did_you_mean == ""


# ---- what goes back to the model


def test_failure_report_names_path_reason_search_and_closest_lines(tmp_path: Path) -> None:
    tree(tmp_path, FILES)
    outcome = apply_blocks(tmp_path, [edit("a.py", "def g():\n    retrun 1\n", "x\n")])
    _, problems = parse_blocks("b.py\n```\n<<<<<<< SEARCH\nq\n```\n")
    report = failure_report(outcome.failures, problems)
    assert "Resend only these blocks" in report and "2 of your" in report
    assert "a.py (not_found)" in report and outcome.failures[0].reason in report
    assert "    retrun 1\n" in report and "Did you mean" in report and "    return 1\n" in report
    assert "could not be read: no =======" in report


def test_failure_report_fences_around_backticks() -> None:
    failure = BlockFailure(edit("r.md", "```\ncode\n```\n", "x\n"), "not_found", "r.md: no", "")
    assert "````\n```\ncode\n```\n````" in failure_report([failure])


def test_failure_key_is_stable_and_tells_edits_apart() -> None:
    one = BlockFailure(edit("a.py", "x\n", "y\n", 0), "not_found", "why", "")
    same = BlockFailure(edit("a.py", "x\n", "z\n", 3), "not_found", "other words", "x\n")
    other = BlockFailure(edit("a.py", "x2\n", "y\n", 0), "not_found", "why", "")
    assert failure_key(one) == failure_key(same)
    assert failure_key(one) != failure_key(other)
    assert failure_key(one) != failure_key(BlockFailure(one.block, "ambiguous", "why", ""))
