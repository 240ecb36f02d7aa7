"""The codec's limits on decoded values: nesting, and integers it could not encode again."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bus import codec
from bus.limits import MAX_NESTING


class Free(msgspec.Struct, kw_only=True):
    text: str = ""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"metadata": {"n": 18446744073709551616}}', "Integer beyond 64 bits - at `$.metadata`"),
        (
            b'{"metadata": {"n": [-9223372036854775809]}}',
            "Integer beyond 64 bits - at `$.metadata`",
        ),
        (
            b'{"metadata": {"a": ' + b"[" * MAX_NESTING + b"]" * MAX_NESTING + b"}}",
            f"Objects and arrays nested deeper than {MAX_NESTING} levels - at `$.metadata`",
        ),
    ],
    ids=["int-over-u64", "int-under-i64", "too-deep"],
)
def test_codec_decode_refuses_what_it_could_not_answer(body: bytes, problem: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        codec.decode(body, Free)
    assert str(caught.value) == problem


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
def test_codec_decode_takes_every_64_bit_integer_and_encodes_it_back(msgpack: bool) -> None:
    value = Free(metadata={"lo": -(2**63), "hi": 2**64 - 1, "deep": [[1]]})
    decoded = codec.decode(codec.encode(value, msgpack), Free, msgpack)
    assert codec.decode(codec.encode(decoded, msgpack), Free, msgpack) == value
