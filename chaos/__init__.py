"""Chaos run: prove that no acknowledged job is lost under worker SIGKILLs and Redis restarts.

``python -m chaos --help``; see docs/reliability.md for what it checks and the figures.
"""
