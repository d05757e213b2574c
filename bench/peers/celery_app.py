"""Celery on the Redis broker, results off (the no-op returns nothing worth keeping)."""

from celery import Celery

from bench.common import bump, mark_start, redis_url

app = Celery("bench", broker=redis_url())
app.conf.update(
    task_default_queue="bench",
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop():
    bump()


@app.task(name="bench.latency")
def latency():
    mark_start()
