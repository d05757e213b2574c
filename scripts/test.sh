#!/usr/bin/env bash
# Lint (ruff check and format check) and type check (mypy), then the whole test suite, on
# Django 5.2 LTS (Python 3.11+) and on Django 6.x (Python 3.12+), each in its own venv under
# .venv/. Tests start their own redis-server on free ports.
# Usage: scripts/test.sh [pytest args...]     e.g. scripts/test.sh -k worker
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

py52=$(find_python 3 11 11) || { echo "error: no Python 3.11+ found (needed for Django 5.2)" >&2; exit 2; }
py6=$(find_python 3 12 13) || { echo "error: no Python 3.12+ found (needed for Django 6)" >&2; exit 2; }

make_venv .venv/dj52 "$py52" "django>=5.2,<5.3"
make_venv .venv/dj6 "$py6" "django>=6.0,<7"
ensure_chromium

echo "==> ruff"
.venv/dj52/bin/ruff check .
.venv/dj52/bin/ruff format --check .

echo "==> mypy"
.venv/dj52/bin/mypy

status=0
for env in dj52 dj6; do
  echo "==> pytest on $(.venv/$env/bin/python -c 'import django, sys; print(f"Django {django.get_version()}, Python {sys.version.split()[0]}")')"
  .venv/$env/bin/python -m pytest "$@" || status=$?
done
exit $status
