"""How long a failed job waits before its next attempt."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine.queue import RedisJobQueue
    from ..registry import JobDefinition


def backoff_seconds(attempts: int, base: float, cap: float, rand: random.Random | None = None) -> float:
    """Exponential backoff with "equal jitter": half the step is fixed, half random.

    attempt 1 waits base*[0.5, 1), attempt 2 base*[1, 2), ... never over ``cap``.
    The jitter spreads retries of jobs that failed together (an outage) so they
    do not all come back in the same instant.
    """
    if base <= 0:
        return 0.0
    step = min(cap, base * (1 << max(0, attempts - 1)))  # 2 ** n as an int: int ** int is typed Any
    r = rand.random() if rand is not None else random.random()
    return step / 2 + r * step / 2


def retry_delay_ms(definition: JobDefinition | None, queue: RedisJobQueue, attempts: int) -> int:
    """The delay before the next attempt of a job that just failed ``attempts`` times."""
    if definition is not None and definition.requeue_on_failure:
        return int(definition.requeue_delay_seconds * 1000)
    base, cap = queue.backoff_base_seconds, queue.backoff_max_seconds
    if definition is not None:
        base = definition.backoff_base_seconds if definition.backoff_base_seconds is not None else base
        cap = definition.backoff_max_seconds if definition.backoff_max_seconds is not None else cap
    return int(backoff_seconds(attempts, base, cap) * 1000)
