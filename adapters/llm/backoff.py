"""Retry delays: jittered exponential backoff that honours ``Retry-After``, always bounded.

Guarantee: ``delay`` never exceeds ``cap_s`` unless the server asked for longer with
``Retry-After``, and the caller never sleeps past its deadline: when the wait would end
after it, :func:`delay` returns None and the caller moves on to the next model.
"""

from __future__ import annotations

import random


def delay(
    retry: int,
    *,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None,
    remaining_s: float,
) -> float | None:
    """Seconds to wait before retry number ``retry`` (0 = the first retry), or None."""
    if retry_after_s is not None and retry_after_s >= 0:
        wait = retry_after_s + random.uniform(0, base_s)
    else:
        ceiling = min(cap_s, base_s * 2**retry)
        wait = random.uniform(ceiling / 2, ceiling)
    return wait if wait < remaining_s else None
