"""Ruff, bandit, semgrep and the test sandbox, as real subprocesses on small trees."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from adapters.quality import sandbox, tools
from adapters.quality.lint_delta import new_problems
from adapters.quality.sandbox import clean_env, network_isolation, run_bounded, run_tests
from adapters.quality.tools import python_files, run_bandit, run_ruff, run_semgrep
from tests.polling import wait_for

pytestmark = pytest.mark.anyio

HAS_PROC = os.path.isdir("/proc")


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def tree(root: Path, *, dirs: bool = False) -> dict[str, bytes]:
    """Every file under ``root`` (and every folder, with ``dirs``) by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else b""
        for p in root.rglob("*")
        if dirs or p.is_file()
    }


# ---- ruff, bandit, semgrep ---------------------------------------------------------------------


async def test_ruff_findings_are_numbered_in_file_line_code_order(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "b.py": "import sys\n",
            "pkg/a.py": "import os\nimport json\n",
            "notes.txt": "import os\n",
        },
    )
    (tmp_path / "outside.py").write_text("import os\n")
    record = await run_ruff(tmp_path, ["pkg/a.py", "./b.py", "notes.txt", "gone.py", "../x.py"])
    assert record.tool == "ruff" and record.ran and not record.ok, record
    unused = [f for f in record.findings if f.code == "F401"]
    assert [(f.file, f.line) for f in unused] == [("b.py", 1), ("pkg/a.py", 1), ("pkg/a.py", 2)]
    assert [f.id for f in record.findings] == [
        f"ruff-{i}" for i in range(1, 1 + len(record.findings))
    ]
    keys = [(f.file, f.line, f.code) for f in record.findings]
    assert keys == sorted(keys)
    assert all(f.tool == "ruff" and f.message for f in record.findings)
    assert not any(".ruff_cache" in name for name in tree(tmp_path, dirs=True))


async def test_ruff_honours_the_repos_config(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "pyproject.toml": '[tool.ruff]\nline-length = 20\nlint.select = ["E501"]\n',
            "a.py": "import os\nx = 'a fairly long line of code here'\n",
        },
    )
    record = await run_ruff(tmp_path, ["a.py"])
    assert [(f.code, f.line) for f in record.findings] == [("E501", 2)], record


async def test_ruff_reports_syntax_errors_and_nothing_to_check(tmp_path: Path) -> None:
    write(tmp_path, {"bad.py": "def f(:\n    pass\n", "README.md": "# hi\n"})
    record = await run_ruff(tmp_path, ["bad.py"])
    assert record.ran and record.findings and record.findings[0].severity == "high"
    none = await run_ruff(tmp_path, ["README.md", "missing.py"])
    assert not none.ran and none.ok and none.note


async def test_python_files_never_leave_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, {"in.py": "x = 1\n"})
    (tmp_path / "secret.py").write_text("x = 1\n")
    (root / "link.py").symlink_to(tmp_path / "secret.py")
    (root / "ok_link.py").symlink_to(root / "in.py")
    names = ["in.py", "link.py", "ok_link.py", "../secret.py", str(tmp_path / "secret.py")]
    assert python_files(root, names) == ["in.py", "ok_link.py"]


async def test_bandit_finds_shell_true_with_its_severity(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "run.py": """\
                import subprocess


                def go(cmd: str) -> None:
                    subprocess.call(cmd, shell=True)
                """,
            "clean.py": "x = 1\n",
        },
    )
    record = await run_bandit(tmp_path, ["run.py", "clean.py", "nothing.py"])
    assert record.tool == "bandit" and record.ran and not record.ok
    shell = [f for f in record.findings if f.code == "B602"]
    assert len(shell) == 1 and shell[0].file == "run.py" and shell[0].line == 5
    assert shell[0].severity == "high"
    assert [f.id for f in record.findings] == [
        f"bandit-{i}" for i in range(1, 1 + len(record.findings))
    ]
    assert all(f.severity in {"info", "low", "medium", "high"} for f in record.findings)
    clean = await run_bandit(tmp_path, ["clean.py"])
    assert clean.ran and clean.ok and not clean.findings


async def test_semgrep_absent_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"a.py": "eval(input())\n"})
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    record = await run_semgrep(tmp_path, ["a.py"])
    assert (record.tool, record.ran, record.note) == ("semgrep", False, "semgrep is not installed")


@pytest.mark.skipif(shutil.which("semgrep") is None, reason="semgrep is not installed")
async def test_semgrep_local_rules(tmp_path: Path) -> None:
    write(
        tmp_path, {"a.py": "import subprocess\nsubprocess.run('ls', shell=True)\neval(input())\n"}
    )
    record = await run_semgrep(tmp_path, ["a.py"])
    assert record.ran, record
    assert {(f.code, f.line) for f in record.findings} >= {
        ("subprocess-shell-true", 2),
        ("eval-or-exec", 3),
    }


# ---- lint delta --------------------------------------------------------------------------------


async def test_lint_delta_reports_only_what_the_edit_added(tmp_path: Path) -> None:
    before = {
        "mod.py": "import json\n\nprint('x')\n",
        "new.py": None,
        "notes.md": "old\n",
        "gone.py": "import os\n",
    }
    write(
        tmp_path,
        {
            # the old unused import moved two lines down; a new one came
            "mod.py": "import sys\n\nimport json\n\nprint('x')\n",
            "new.py": "import os\n",
            "notes.md": "new\n",
        },
    )
    snapshot = tree(tmp_path)
    problems = await new_problems(tmp_path, before)
    found = {(p.file, p.code, p.message) for p in problems}
    assert ("mod.py", "F401", "`sys` imported but unused") in found
    assert ("new.py", "F401", "`os` imported but unused") in found
    assert not any("json" in p.message for p in problems)
    assert not any(p.file in ("notes.md", "gone.py") for p in problems)
    assert tree(tmp_path) == snapshot  # nothing written into the tree


async def test_lint_delta_syntax_errors_with_line(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": "x = 1\n\ndef f(:\n    pass\n", "b.py": "return 3\n"})
    problems = await new_problems(tmp_path, {"a.py": "x = 1\n", "b.py": None})
    syntax = [p for p in problems if p.code == "syntax"]
    assert [(p.id, p.file, p.line) for p in syntax] == [
        ("syntax-1", "a.py", 3),
        ("syntax-2", "b.py", 1),
    ]
    assert syntax[0].message.startswith("line 3:")
    assert all(p.code != "invalid-syntax" for p in problems)


async def test_lint_delta_clean_edit_has_no_problems(tmp_path: Path) -> None:
    write(tmp_path, {"a.py": "import os\n\nprint(os.sep, 2)\n"})
    assert await new_problems(tmp_path, {"a.py": "import os\n\nprint(os.sep)\n"}) == []


# ---- bounded subprocesses ----------------------------------------------------------------------


async def test_run_bounded_feeds_stdin_and_kills_on_timeout(tmp_path: Path) -> None:
    echoed = await run_bounded(
        [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())"],
        cwd=tmp_path,
        timeout_s=30,
        stdin=b"hello",
    )
    assert (echoed.returncode, echoed.stdout, echoed.timed_out) == (0, b"HELLO", False)
    slept = await run_bounded(
        [sys.executable, "-c", "import time; time.sleep(600)"], cwd=tmp_path, timeout_s=0.5
    )
    assert slept.timed_out and slept.returncode is None


async def test_run_bounded_keeps_head_and_tail_of_large_output(tmp_path: Path) -> None:
    done = await run_bounded(
        [sys.executable, "-c", "print('a' * 100000 + 'END')"],
        cwd=tmp_path,
        timeout_s=30,
        head_bytes=1000,
        tail_bytes=100,
    )
    assert done.truncated and done.stdout.startswith(b"a" * 1000)
    assert done.stdout.rstrip().endswith(b"END") and len(done.stdout) < 1200


# ---- environment -------------------------------------------------------------------------------


def test_clean_env_keeps_only_the_allowlist(tmp_path: Path) -> None:
    source = {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "LC_API_TOKEN": "x",
        "HOME": "/root",
        "SOPHIA_LLM_API_KEY": "canary-123",
        "AWS_SECRET_ACCESS_KEY": "aws",
        "PORTKEY_API_KEY": "pk",
        "GITHUB_TOKEN": "gh",
        "VIRTUAL_ENV": "/venv",
        "TMPDIR": "/tmp/x",
    }
    env = clean_env(tmp_path, home=tmp_path / "home", source=source)
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(tmp_path / "home"),
        "TMPDIR": "/tmp/x",
        "PYTHONPATH": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    default = clean_env(source={})
    assert Path(default["HOME"]).is_dir() and "PYTHONPATH" not in default


# ---- the test sandbox --------------------------------------------------------------------------


async def test_run_tests_reports_failures_with_file_and_line(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "calc.py": "def add(a, b):\n    return a + b\n",
            "tests/test_calc.py": """\
                from calc import add


                def test_add():
                    assert add(1, 2) == 3


                class TestMore:
                    def test_wrong(self):
                        value = add(2, 2)
                        assert value == 5
                """,
        },
    )
    record = await run_tests(tmp_path, timeout_s=120)
    assert record.tool == "pytest" and record.ran and not record.ok, record
    assert record.summary == "1 failed, 1 passed"
    [finding] = record.findings
    assert finding.id == "pytest-1" and finding.file == "tests/test_calc.py"
    assert finding.line == 11
    assert "tests/test_calc.py::TestMore::test_wrong" in finding.message
    assert not (tmp_path / "__pycache__").exists() and not (tmp_path / ".pytest_cache").exists()


async def test_run_tests_passing_and_no_tests(tmp_path: Path) -> None:
    write(tmp_path / "good", {"test_ok.py": "def test_ok():\n    assert True\n"})
    good = await run_tests(tmp_path / "good", timeout_s=120)
    assert good.ran and good.ok and good.summary == "1 passed" and not good.findings, good
    write(tmp_path / "empty", {"lib.py": "x = 1\n"})
    empty = await run_tests(tmp_path / "empty", timeout_s=120)
    assert (empty.ran, empty.ok, empty.summary) == (True, True, "no tests"), empty


async def test_run_tests_hides_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOPHIA_LLM_API_KEY", "canary-123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-aws-456")
    monkeypatch.setenv("PORTKEY_API_KEY", "canary-pk-789")
    write(
        tmp_path,
        {
            "test_env.py": """\
                import os


                def test_no_secrets():
                    for name in ("SOPHIA_LLM_API_KEY", "AWS_SECRET_ACCESS_KEY", "PORTKEY_API_KEY"):
                        assert name not in os.environ
                    assert not any("canary" in value for value in os.environ.values())
                    assert os.environ["PYTHONDONTWRITEBYTECODE"] == "1"
                    assert os.environ["HOME"] != os.path.expanduser("~root")
                """
        },
    )
    record = await run_tests(tmp_path, timeout_s=120)
    assert record.ok and record.summary == "1 passed", record


def marker_gone(marker: str) -> bool:
    """No process has ``marker`` in its command line (Linux ``/proc``)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return False
            except OSError:
                continue
    return True


def sleeper_repo(root: Path, marker: str, *, new_session: bool) -> None:
    write(
        root,
        {
            "test_slow.py": f"""\
                import subprocess
                import sys
                import time


                def test_slow():
                    sleeper = "import time; time.sleep(600)"
                    subprocess.Popen(
                        [sys.executable, "-c", sleeper, "{marker}"], start_new_session={new_session}
                    )
                    time.sleep(600)
                """
        },
    )


async def test_run_tests_timeout_kills_the_whole_run(tmp_path: Path) -> None:
    marker = f"sophia-sandbox-marker-{uuid.uuid4().hex}"
    sleeper_repo(tmp_path, marker, new_session=False)
    record = await run_tests(tmp_path, timeout_s=5)
    assert record.ran and not record.ok and "timed out" in record.note, record
    if HAS_PROC:
        await wait_for(lambda: marker_gone(marker), limit_s=15)


async def test_a_process_that_left_the_group_dies_too(tmp_path: Path) -> None:
    isolated, how = network_isolation()
    if "pid" not in how:
        pytest.skip(f"no pid namespace here: {how}")
    if not HAS_PROC:
        pytest.skip("no /proc to look for the process in")
    marker = f"sophia-sandbox-marker-{uuid.uuid4().hex}"
    sleeper_repo(tmp_path, marker, new_session=True)
    record = await run_tests(tmp_path, timeout_s=5)
    assert isolated and record.ran and not record.ok, record
    await wait_for(lambda: marker_gone(marker), limit_s=15)


async def test_run_tests_memory_limit(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "test_mem.py": """\
                import pytest


                def test_big_allocation_fails():
                    with pytest.raises(MemoryError):
                        bytearray(3 * 1024**3)
                """
        },
    )
    record = await run_tests(tmp_path, timeout_s=120, memory_bytes=2 * 1024**3)
    assert record.ok, record


async def test_run_tests_without_pytest_did_not_run(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run(  # noqa: ASYNC221 - a one-off setup step
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    write(tmp_path / "repo", {"test_x.py": "def test_x():\n    pass\n"})
    record = await run_tests(tmp_path / "repo", timeout_s=60, python=str(venv / "bin" / "python"))
    assert not record.ran and not record.ok and "pytest is not installed" in record.note, record


async def test_run_tests_have_no_network(tmp_path: Path) -> None:
    isolated, how = network_isolation()
    if not isolated:
        pytest.skip(f"network isolation is not available here: {how}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        write(
            tmp_path,
            {
                "test_net.py": f"""\
                    import socket

                    import pytest


                    def test_cannot_connect():
                        with pytest.raises(OSError):
                            socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
                    """
            },
        )
        record = await run_tests(tmp_path, timeout_s=120)
    assert record.ok and record.summary == "1 passed", record
    assert "WITH network" not in record.note


async def test_without_isolation_the_note_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "_isolation", ((), "unshare is not on PATH"))
    write(tmp_path, {"test_ok.py": "def test_ok():\n    pass\n"})
    record = await run_tests(tmp_path, timeout_s=120)
    assert record.ok
    assert record.note == (
        "tests ran WITH network access: unshare -rn is not available here (unshare is not on PATH)"
    )
