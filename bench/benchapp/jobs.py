"""The benchmark's jobs, found by django_jobqueue's autodiscovery like any app's."""

from bench.common import bump, mark_start
from django_jobqueue import job


@job(name="bench.noop")
def noop(payload, job):
    bump()


@job(name="bench.latency")
def latency(payload, job):
    mark_start()
