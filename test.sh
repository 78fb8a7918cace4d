#!/usr/bin/env bash
# The one command to run the checks and tests, on a fresh Debian/Ubuntu machine or in CI:
#
#   ./test.sh [pytest args...]        e.g. ./test.sh -x -k harness
#
# Installs PostgreSQL 15 + TimescaleDB + pg_cron (scripts/pg_cluster.sh install; needs root or sudo the
# first time), creates/refreshes .venv, then runs ruff, mypy and pytest. The tests start their own
# throwaway database cluster unless TEST_DATABASE_URL points at a server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

VENV=$(realpath -m "${QUAINT_VENV:-.venv}")
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

now_ms() { echo $(($(date +%s%N) / 1000000)); }
fmt_s() { printf '%d.%01d s' $(($1 / 1000)) $(($1 % 1000 / 100)); }
T_START=$(now_ms)
# The total is printed on failure too, so a slow red run is visible as such.
print_total() { echo "[test.sh] total $(fmt_s $(($(now_ms) - T_START)))"; }
trap print_total EXIT

step() {
  local name=$1 t0
  shift
  t0=$(now_ms)
  echo "[test.sh] $name ..."
  "$@"
  echo "[test.sh] $name ok ($(fmt_s $(($(now_ms) - t0))))"
}

pick_python() {
  local py
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      echo "$py"
      return
    fi
  done
  echo "[test.sh] error: Python >= 3.11 not found" >&2
  return 1
}

ensure_venv() {
  if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
    local py
    py=$(pick_python)
    rm -rf "$VENV"
    if ! "$py" -m venv "$VENV"; then
      # Debian splits venv support into python3-venv.
      [[ $EUID -eq 0 ]] || { echo "[test.sh] error: install python3-venv, then rerun" >&2; return 1; }
      rm -rf "$VENV"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
      "$py" -m venv "$VENV"
    fi
  fi
  # Reinstall only when the declared dependencies change (a fresh venv has no stamp).
  local stamp=$VENV/.quaint-pyproject.sha256 want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    "$VENV/bin/python" -m pip install -q -e '.[test]'
    echo "$want" >"$stamp"
  else
    echo "[test.sh] .venv up to date with pyproject.toml"
  fi
}

run_pytest() {
  local rc=0
  pytest "$@" || rc=$?
  # Exit code 5 means nothing was collected: a broken selection or test tree, never a pass.
  if [[ $rc -eq 5 ]]; then
    echo "[test.sh] error: pytest collected no tests" >&2
    return 1
  fi
  return "$rc"
}

# Tools the deployment tests drive for real: Prometheus + promtool, Chromium (pgAdmin browser test),
# and ShellCheck for the shell scripts. Installed only when missing.
ensure_tools() {
  local missing=() cmd
  for cmd in prometheus promtool chromium shellcheck; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  [[ ${#missing[@]} -eq 0 ]] && { echo "[test.sh] tools present"; return; }
  local sudo=()
  if [[ $EUID -ne 0 ]]; then
    sudo -n true 2>/dev/null || { echo "[test.sh] error: missing ${missing[*]}; install prometheus chromium shellcheck (needs root)" >&2; return 1; }
    sudo=(sudo -n)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus chromium shellcheck >/dev/null
}

if [[ -n ${TEST_DATABASE_URL:-} ]]; then
  echo "[test.sh] TEST_DATABASE_URL is set: skipping the local PostgreSQL install"
else
  step "system packages" scripts/pg_cluster.sh install
  step "test tools" ensure_tools
  step "pgAdmin venv" scripts/pgadmin_env.sh
  # Everything the suite needs is installed now: a skipped test would be a test that did not run.
  export QUAINT_NO_SKIP=1
fi
step "venv" ensure_venv
export PATH="$VENV/bin:$PATH"
step "ruff" ruff check .
step "mypy" mypy
step "pytest" run_pytest "$@"
