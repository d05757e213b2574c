"""The peers' apps: what their worker commands import. Each needs its package
from the ``bench`` extra; nothing here is imported for ``--only jobqueue``."""
