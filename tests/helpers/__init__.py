"""What the tests share, one module a concern; fixtures are in tests/conftest.py.

* ``paths``: the checkout and the demo project.
* ``waiting``: polling until something holds (never a sleep-and-assert).
* ``redis_data``: reading and writing what Redis holds for a queue (job hashes,
  statuses, the events log, worker records).
* ``clock``: a clock the test moves by hand, for the engine.
* ``workers``: workers in this process (``drain``, a fetcher driven by hand)
  and in their own processes (``start_worker``, ``run_worker``, ``stop``).
* ``admin``: the admin's URLs, users and clients, and what its pages show.
* ``config``: JOBQUEUE validation.
* ``commands``: what a management command prints.
* ``servers``: Redis servers besides the session's (with a password, over TLS)
  and a proxy in front of one that loses replies.
* ``cluster``: private Redis Clusters and Sentinel groups, workers on them, and
  what the ledger app records (bench/scaling.py uses it too).

A test module imports from here, never from another test module
(tests/test_layout.py checks it).
"""
