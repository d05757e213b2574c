"""The benchmark's Django app: only its jobs.py matters."""
