# The two commands of README.md, and a few more; `make help` lists them. Each installs what it
# needs (a virtualenv under .venv/, made by scripts/with-venv.sh or scripts/test.sh).
.PHONY: demo test test-fast test-slow typecheck fmt lint chaos bench help

demo:  ## install, start Redis if needed, the demo project and a worker
	./scripts/demo.sh

test:  ## ruff, its format check, mypy, then the whole suite on Django 5.2 and 6.x (what CI runs)
	./scripts/test.sh

test-fast:  ## the edit-test loop: Django 5.2 only, no slow or browser tests, 4 processes (about 2 minutes)
	./scripts/with-venv.sh python -m pytest -q -m "not slow" --ignore=tests/test_browser.py -n 4

test-slow:  ## only the slow tests (long chaos and model runs, long cluster failovers)
	./scripts/with-venv.sh python -m pytest -m slow

typecheck:  ## mypy (strict, with django-stubs) on the package; settings in pyproject.toml
	./scripts/with-venv.sh mypy

fmt:  ## ruff format the Python files and apply ruff's fixes (Markdown is left as written)
	./scripts/with-venv.sh sh -c 'ruff check --fix .; status=$$?; ruff format . && exit $$status'

lint:  ## ruff's checks and its format check, changing nothing
	./scripts/with-venv.sh sh -c 'ruff check . && ruff format --check .'

chaos:  ## the full chaos run: 100 000 jobs, worker and Redis SIGKILLs; exits 1 if a job is lost
	./scripts/with-venv.sh python -m chaos

bench:  ## us against RQ, Celery, Dramatiq and Huey (15-20 minutes; writes docs/benchmarks-results.md)
	./scripts/with-venv.sh python -m bench

help:  ## this list
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z-]*:.*## / { printf "  make %-10s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
