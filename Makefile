# The two commands of README.md, and a few more.
.PHONY: demo test test-slow chaos bench lint

demo:  ## install, start Redis if needed, the demo project and a worker
	./scripts/demo.sh

test:  ## the whole suite on Django 5.2 and 6.x (what CI runs)
	./scripts/test.sh

test-slow:  ## only the slow tests (long chaos and model runs, long cluster failovers)
	./scripts/with-venv.sh python -m pytest -m slow

chaos:  ## the full chaos run: 100 000 jobs, worker and Redis SIGKILLs; exits 1 if a job is lost
	./scripts/with-venv.sh python -m chaos

bench:  ## us against RQ, Celery, Dramatiq and Huey (15-20 minutes; writes docs/benchmarks-results.md)
	./scripts/with-venv.sh python -m bench

lint:
	./scripts/with-venv.sh ruff check .
