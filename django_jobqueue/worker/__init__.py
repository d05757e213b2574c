"""The worker runtime: threads that claim, run and finish jobs, renew their
leases and keep the queues swept (``manage.py jobq_worker``).

It drives the engine, and reads the settings, the job registry and the shared
client of the Django face.
"""

from .worker import Worker

__all__ = ["Worker"]
