#!/usr/bin/env bash
# The one command to run the checks and tests, on a fresh Debian/Ubuntu machine or in CI:
#
#   ./test.sh [--stress] [pytest args...]        e.g. ./test.sh -x -k harness
#
# --stress (or QUAINT_STRESS=1) runs pytest with a competing CPU load on every core (stress-ng, started
# and stopped here) and prints the load averages seen: the suite must pass on a busy machine.
#
# Installs PostgreSQL 15 + TimescaleDB + pg_cron (scripts/pg_cluster.sh install; needs root or sudo the
# first time), creates/refreshes .venv, then runs ruff, mypy and pytest. The tests start their own
# throwaway database cluster unless TEST_DATABASE_URL points at a server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

STRESS=${QUAINT_STRESS:-0}
if [[ ${1:-} == --stress ]]; then
  STRESS=1
  shift
fi

VENV=$(realpath -m "${QUAINT_VENV:-.venv}")
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

now_ms() { echo $(($(date +%s%N) / 1000000)); }
fmt_s() { printf '%d.%01d s' $(($1 / 1000)) $(($1 % 1000 / 100)); }
T_START=$(now_ms)
# The total is printed on failure too, so a slow red run is visible as such.
print_total() { echo "[test.sh] total $(fmt_s $(($(now_ms) - T_START)))"; }
on_exit() {
  if declare -F stop_stress >/dev/null; then stop_stress; fi
  print_total
}
trap on_exit EXIT

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
# ShellCheck for the shell scripts, stress-ng for --stress, and iproute2 + iptables for the cut-off host test
# (tests/test_ha_cutoff.py: network namespaces, veth, tc, random packet loss). Installed only when missing.
ensure_tools() {
  local missing=() cmd
  for cmd in prometheus promtool chromium shellcheck stress-ng ip tc iptables; do
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
    prometheus chromium shellcheck stress-ng iproute2 iptables >/dev/null
}

# --stress: one CPU hog per core for as long as pytest runs, and the load averages sampled meanwhile.
STRESS_PID=""
SAMPLER_PID=""
LOAD_LOG=""
start_stress() {
  command -v stress-ng >/dev/null 2>&1 || { echo "[test.sh] error: --stress needs stress-ng" >&2; return 1; }
  LOAD_LOG=$(mktemp)
  stress-ng --cpu "$(nproc)" --timeout 0 --quiet </dev/null >/dev/null 2>&1 &
  STRESS_PID=$!
  (while true; do cut -d' ' -f1 /proc/loadavg >>"$LOAD_LOG"; sleep 15; done) </dev/null >/dev/null 2>&1 &
  SAMPLER_PID=$!
  echo "[test.sh] stress: stress-ng --cpu $(nproc) (pid $STRESS_PID)"
}
stop_stress() {
  [[ -n $STRESS_PID ]] || return 0
  kill "$STRESS_PID" "$SAMPLER_PID" 2>/dev/null || true
  wait "$STRESS_PID" "$SAMPLER_PID" 2>/dev/null || true
  STRESS_PID=""
  if [[ -s $LOAD_LOG ]]; then
    sort -n "$LOAD_LOG" | awk '{v[NR] = $1; s += $1} END {
      printf "[test.sh] stress: 1-min load average over the run: min %.2f, median %.2f, mean %.2f, max %.2f (%d samples)\n",
        v[1], v[int((NR + 1) / 2)], s / NR, v[NR], NR }'
  fi
  rm -f "$LOAD_LOG"
}

if [[ -n ${TEST_DATABASE_URL:-} ]]; then
  echo "[test.sh] TEST_DATABASE_URL is set: skipping the local PostgreSQL install"
else
  step "system packages" scripts/pg_cluster.sh install
  step "test tools" ensure_tools
  step "pgAdmin venv" scripts/pgadmin_env.sh
  # Docker's engine from Debian, for the compose stack test (tests/test_compose_stack.py, marker docker),
  # which starts its own private dockerd and loads the stand-in images from ~/.cache/quaint (building
  # them there the first time); a system engine is never used.
  step "docker engine" scripts/docker_engine.sh install
  # Everything the suite needs is installed now: a skipped test would be a test that did not run.
  export QUAINT_NO_SKIP=1
fi
step "venv" ensure_venv
export PATH="$VENV/bin:$PATH"
step "ruff" ruff check .
step "ruff format" ruff format --check .
step "mypy" mypy
if [[ $STRESS == 1 ]]; then
  start_stress
fi
step "pytest" run_pytest "$@"
