"""The low-level engine, where shared/SPEC.md promises it:
``from django_jobqueue.queue import RedisJobQueue``.

The engine itself lives in ``engine/`` and knows nothing of Django; the queue
users get here encodes payloads and results as ``enqueue()`` does, with
Django's JSON encoder.
"""

from __future__ import annotations

from . import django_json
from .engine import queue
from .engine.progress import Progress
from .engine.queue_ops import Refusal
from .engine.replies import ClaimedJob, Outcome, SweepResult

__all__ = ["ClaimedJob", "Outcome", "Progress", "RedisJobQueue", "Refusal", "SweepResult"]


class RedisJobQueue(queue.RedisJobQueue):
    """The engine's queue, with payloads and results encoded by Django's JSON encoder."""

    json_encoder = django_json.ENCODER
