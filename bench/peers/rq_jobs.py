"""RQ: plain functions, enqueued by reference."""

from bench.common import bump, mark_start


def noop():
    bump()


def latency():
    mark_start()
