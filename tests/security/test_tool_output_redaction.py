"""A failing test's assertion in the reviewer's tool output keeps whole values, so redaction
sees a token's whole shape. The canary test found pytest's cut form in a task record and in
the model cache: ``assert 'ghp_shF3V0yY...b1FrAdThMZAp8' == ...`` (half a token, no shape)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.quality.sandbox import run_tests
from memory.redact import redact
from tests.security.canaries import CanarySet, leaks

pytestmark = pytest.mark.anyio


async def test_run_tests_assertion_messages_keep_whole_tokens(tmp_path: Path) -> None:
    canaries = CanarySet.fresh()
    token, key_id = canaries.github_token.value, canaries.aws_key_id.value
    (tmp_path / "test_keys.py").write_text(
        f'def test_keys():\n    assert "{token}" == "{key_id}"\n'
    )
    record = await run_tests(tmp_path, timeout_s=120)
    messages = "\n".join(f.message for f in record.findings)
    assert record.ran and not record.ok and token in messages  # whole, not cut
    assert leaks(redact(messages)[0], canaries.all) == []
