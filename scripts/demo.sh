#!/usr/bin/env bash
# The demo: installs what it needs, uses the Redis at 127.0.0.1:6379 if one answers
# (else starts a private one), then runs the demo project and a worker.
# Its keys are under its own prefix (jobq-demo:*), never a local project's queue:*.
# Ctrl-C stops everything it started, in order (the web server and the worker, then the private
# Redis), and removes this run's files (the private Redis's directory, the SQLite database).
#   DEMO_REDIS_URL=redis://host:port/db   use that Redis instead
#   DEMO_PORT=8000                        the web port (a free one if taken)
#   DEMO_KEY_PREFIX=jobq-demo             the first part of every key the demo writes
#   DEMO_DEBUG=1                          Django's DEBUG (off by default)
#   DEMO_DB=path/to/db.sqlite3            keep the database there (default: in this run's temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

py=$(find_python 3 11 11) || { echo "error: no Python 3.11+ found" >&2; exit 2; }
make_venv .venv/dj52 "$py" "django>=5.2,<5.3"
PY="$PWD/.venv/dj52/bin/python"

# This run's files: the private Redis's log (its directory goes inside too) and the database.
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/jobq-demo.XXXXXX")
export DEMO_DB="${DEMO_DB:-$run_dir/db.sqlite3}"

app_pids=()   # the worker and the web server
redis_pid=""  # the private Redis, if one is started: stopped after them
stop() {  # stop PID...: SIGTERM each, then wait for them all
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  # A second Ctrl-C interrupts `wait`: wait again until the process is gone.
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null; do wait "$pid" 2>/dev/null || true; done
  done
}
stop_all() {
  trap - EXIT
  # A second Ctrl-C while the worker lets running jobs finish: it stops at once (the jobs' leases
  # bring them back).
  trap 'kill -TERM ${app_pids[@]+"${app_pids[@]}"} 2>/dev/null || true' INT TERM HUP
  # The worker removes its record from Redis as it stops: Redis goes last.
  stop ${app_pids[@]+"${app_pids[@]}"}
  if [ -n "$redis_pid" ]; then stop "$redis_pid"; fi
  rm -rf "$run_dir"
}
trap stop_all EXIT
trap 'echo; echo "stopping the demo"; stop_all; echo "demo stopped"; exit 0' INT TERM HUP

# start CMD...: run CMD in the background in a process group of its own, so that Ctrl-C reaches
# this script only, which then stops each process in order (above); its pid is in $!.
start() {
  set -m
  "$@" &
  set +m
}

port_answers() {  # port_answers HOST PORT: true if a Redis answers PING there
  "$PY" - "$1" "$2" <<'PYEOF'
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5) as s:
        s.sendall(b"PING\r\n")
        sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)
except OSError:
    sys.exit(1)
PYEOF
}

if [ -n "${DEMO_REDIS_URL:-}" ]; then
  redis_note="the Redis you named"
elif port_answers 127.0.0.1 6379; then
  DEMO_REDIS_URL="redis://127.0.0.1:6379/0"
  redis_note="the Redis already running on 127.0.0.1:6379"
else
  log="$run_dir/redis.log"
  # Its directory in ours, so that nothing of it outlives this run; its errors go to the terminal.
  start env TMPDIR="$run_dir" "$PY" -m django_jobqueue.devserver > "$log"
  redis_pid=$!
  for _ in $(seq 100); do
    grep -q "listening at" "$log" && break
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  DEMO_REDIS_URL=$(grep -o 'redis://[0-9.:]*/0' "$log" | head -1)
  [ -n "$DEMO_REDIS_URL" ] || { cat "$log"; echo "error: could not start a Redis server" >&2; exit 1; }
  redis_note="a private $(head -1 "$log" | cut -d' ' -f1-3) started for the demo"
fi
export DEMO_REDIS_URL
export DEMO_KEY_PREFIX="${DEMO_KEY_PREFIX:-jobq-demo}"
# A secret of this run's own: sessions and signatures of one demo run mean nothing to the next.
DEMO_SECRET_KEY="${DEMO_SECRET_KEY:-$("$PY" -c "import secrets; print(secrets.token_urlsafe(40))")}"
export DEMO_SECRET_KEY

web_port=${DEMO_PORT:-8000}
if "$PY" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $web_port)) != 0)"; then
  web_port=$("$PY" -c "from django_jobqueue.devserver import free_port; print(free_port())")
fi

password=$("$PY" -c "import secrets; print(secrets.token_urlsafe(9))")
cd testproject
# --password=...: a generated password may start with "-".
"$PY" manage.py demo_setup --username admin --password="$password"
"$PY" manage.py check --fail-level ERROR >/dev/null

# Every queue of the demo's real @job handlers (demo/jobs.py): jobs first, then the limited payments.
# The "demo" queue is not one: the mock pool in the web process drives it.
start "$PY" manage.py jobq_worker --queue jobs --queue payments --concurrency 4
app_pids+=($!)
start "$PY" manage.py runserver "127.0.0.1:$web_port" --noreload
app_pids+=($!)

for _ in $(seq 100); do
  "$PY" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $web_port)))" && break
  sleep 0.1
done
cat <<MSG

  django-jobqueue demo is running
    demo page:  http://127.0.0.1:$web_port/
    admin:      http://127.0.0.1:$web_port/admin/   user: admin   password: $password
    redis:      $DEMO_REDIS_URL ($redis_note), keys under $DEMO_KEY_PREFIX:*
    worker:     manage.py jobq_worker --queue jobs --queue payments --concurrency 4

  Press Ctrl-C to stop.
MSG
# Until Ctrl-C, or the worker or the web server ends by itself (then the rest is stopped too).
# The private Redis ending does not end the demo: the page then says Redis is unavailable.
wait -n "${app_pids[@]}"
