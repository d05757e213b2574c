# The two commands of README.md, and a few more.
.PHONY: demo test test-quick lint

demo:  ## install, start Redis if needed, the demo project and a worker
	./scripts/demo.sh

test:  ## the whole suite on Django 5.2 and 6.x (what CI runs)
	./scripts/test.sh

test-quick:  ## the suite on Django 5.2 only, stopping at the first failure (after one make test)
	.venv/dj52/bin/python -m pytest -x -q

lint:
	.venv/dj52/bin/ruff check .
