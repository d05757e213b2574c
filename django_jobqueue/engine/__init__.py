"""The engine: one job queue on Redis, as Python wrappers over Lua scripts.

It knows nothing of Django and nothing of the worker (tests/test_package_layers.py
checks its imports): it takes a redis-py client and plain values. Users reach
it as ``django_jobqueue.queue.RedisJobQueue`` (shared/SPEC.md).
"""
