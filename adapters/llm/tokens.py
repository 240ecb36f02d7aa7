"""Token counts for budget estimates: a real tokenizer, then a stated safety margin.

Guarantee: ``estimate`` is meant to be at least what a GPT-style BPE tokenizer counts for the
same messages, so a reservation made from it covers the attempt. It counts with the WordPiece
tokenizer Sophia already ships (the memory model's, through the ``tokenizers`` package: no
download) and adds ``MARGIN`` plus a per-message overhead for the chat format. Measured on
Sophia's own 56 source and doc files, OpenAI's cl100k encoding counted 0.59 to 0.93 and
Anthropic's tokenizer 0.65 to 0.98 of the WordPiece count (WordPiece splits code finely), so
``MARGIN`` leaves at least 25 % headroom over the worst seen; ``bench/gateway.py`` prints the
same ratios (``token_estimate_*``). The real usage settles the reservation afterwards, so an
overestimate only holds budget for the length of a call.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

from bus.schemas.llm import Message

MARGIN = 1.25  # times the WordPiece count; see the module docstring for why this is safe
PER_MESSAGE = 8  # role and separators of the chat format, per message
PER_CALL = 16  # the reply's priming tokens


@functools.cache
def _tokenizer():  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer

    from memory.embedder import TOKENIZER_PATH

    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count(text: str) -> int:
    """The WordPiece tokens of ``text``, without special tokens."""
    if not text:
        return 0
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)


def estimate(messages: Iterable[Message]) -> int:
    """A safe upper estimate of the prompt tokens a model will bill for ``messages``."""
    contents = [m.content for m in messages]
    counted = sum(len(e.ids) for e in _tokenizer().encode_batch(contents, add_special_tokens=False))
    return math.ceil(counted * MARGIN) + PER_MESSAGE * len(contents) + PER_CALL
