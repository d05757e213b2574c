#!/usr/bin/env bash
# The benchmark in one command: makes .venv/bench (this project + the `bench`
# extra: rq, celery, dramatiq, huey, matplotlib) on first use, then runs it.
# Usage: bench/run.sh [--quick] [--only jobqueue,rq-fork,...] [--out-dir DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
py=$(find_python 3 11 11) || { echo "error: no Python 3.11+ found" >&2; exit 2; }
exec "$py" -m bench "$@"
