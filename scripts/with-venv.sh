#!/usr/bin/env bash
# Run a command inside the project's Django 5.2 virtualenv, making it first if needed.
#   scripts/with-venv.sh python -m chaos --jobs 20000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
py=$(find_python 3 11 11) || { echo "error: no Python 3.11+ found" >&2; exit 2; }
make_venv .venv/dj52 "$py" "django>=5.2,<5.3"
export PATH="$PWD/.venv/dj52/bin:$PATH"
exec "$@"
