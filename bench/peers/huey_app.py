"""Huey on Redis (RedisHuey: blocking dequeue, the default)."""

from huey import RedisHuey

from bench.common import bump, mark_start, redis_url

huey = RedisHuey("bench", url=redis_url())


@huey.task()
def noop():
    bump()


@huey.task()
def latency():
    mark_start()
