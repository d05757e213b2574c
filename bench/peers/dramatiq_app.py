"""Dramatiq on its Redis broker, default middleware."""

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.common import bump, mark_start, redis_url

broker = RedisBroker(url=redis_url())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", actor_name="bench_noop")
def noop():
    bump()


@dramatiq.actor(queue_name="bench", actor_name="bench_latency")
def latency():
    mark_start()
