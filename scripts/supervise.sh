#!/usr/bin/env bash
# Keep one local-mode service running, as Docker's `restart: unless-stopped` does; scripts/local_suite.sh
# starts each component under it (never run it by hand):
#
#   scripts/supervise.sh NAME STATE_FILE COMMAND [ARG...]
#
# COMMAND runs as a child of this process (same process group). When it exits without a stop request it
# is started again after a delay of 1, 2, 4, ... seconds, capped at 30 s; the delay starts over once a
# run has lasted 60 s. Exit code 2 means bad configuration: that is not restarted (the same settings
# would fail again), and this supervisor exits 2 too. SIGTERM, SIGINT or SIGHUP to this process is a stop
# request: it is passed to the child, which is then never restarted. Every exit and restart is logged
# (stdout, i.e. the service's log) with its exit code. STATE_FILE (KEY=value lines, rewritten atomically)
# says what runs: state (running | waiting | stopped | gave-up), child, restarts, last_exit,
# last_exit_at, next_start_at (epoch seconds).
set -euo pipefail

[[ $# -ge 3 ]] || { echo "usage: $0 NAME STATE_FILE COMMAND [ARG...]" >&2; exit 64; }
NAME=$1
STATE_FILE=$2
shift 2

FIRST_DELAY_S=1
MAX_DELAY_S=30
STABLE_AFTER_S=60

child=""
sleeper=""
stop_requested=0
restarts=0
last_exit=""
last_exit_at=""

now() { date -u +%FT%TZ; }
say() { printf '===== %s: %s =====\n' "$(now)" "$*"; }

write_state() {
  local state=$1 next=${2:-} tmp
  tmp=$(mktemp "$STATE_FILE.XXXXXX")
  printf 'state=%s\nchild=%s\nrestarts=%s\nlast_exit=%s\nlast_exit_at=%s\nnext_start_at=%s\n' \
    "$state" "$child" "$restarts" "$last_exit" "$last_exit_at" "$next" >"$tmp"
  mv -f "$tmp" "$STATE_FILE"
}

on_stop() {
  stop_requested=1
  if [[ -n $child ]]; then kill -TERM "$child" 2>/dev/null || true; fi
  if [[ -n $sleeper ]]; then kill "$sleeper" 2>/dev/null || true; fi
}
trap on_stop TERM INT HUP

# What an exit status means, for the log.
describe_exit() {
  local rc=$1
  if ((rc > 128)); then
    echo "killed by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null || echo '?'))"
  else
    echo "exit code $rc"
  fi
}

# Wait until the child has really exited and put its status in rc. A trapped signal interrupts `wait`
# (status > 128) while the child still runs: then wait again. bash keeps the status of a reaped child,
# so the last `wait` returns the child's own status.
wait_child() {
  while :; do
    wait "$child" 2>/dev/null || true
    kill -0 "$child" 2>/dev/null || break
  done
  rc=0
  wait "$child" 2>/dev/null || rc=$?
}

consecutive=0
while :; do
  "$@" </dev/null &
  child=$!
  # A stop request that came before $child was known was not passed on: pass it now.
  if [[ $stop_requested -eq 1 ]]; then kill -TERM "$child" 2>/dev/null || true; fi
  started=$SECONDS
  write_state running
  wait_child
  last_exit=$rc
  last_exit_at=$(now)
  ran=$((SECONDS - started))
  child=""
  if [[ $stop_requested -eq 1 ]]; then
    say "$NAME stopped on request ($(describe_exit "$rc"))"
    write_state stopped
    exit 0
  fi
  if [[ $rc -eq 2 ]]; then
    say "$NAME exited with code 2 (bad configuration, see above) after ${ran}s: not restarted;" \
      "fix the setting, then ./deploy.sh --local"
    write_state gave-up
    exit 2
  fi
  ((ran < STABLE_AFTER_S)) || consecutive=0
  delay=$((FIRST_DELAY_S << (consecutive < 5 ? consecutive : 5)))
  ((delay <= MAX_DELAY_S)) || delay=$MAX_DELAY_S
  consecutive=$((consecutive + 1))
  restarts=$((restarts + 1))
  say "$NAME ended without a stop request ($(describe_exit "$rc")) after ${ran}s; restart $restarts in ${delay}s"
  write_state waiting "$(($(date +%s) + delay))"
  sleep "$delay" &
  sleeper=$!
  wait "$sleeper" 2>/dev/null || true
  sleeper=""
  if [[ $stop_requested -eq 1 ]]; then
    say "$NAME stopped on request while waiting to restart"
    write_state stopped
    exit 0
  fi
  say "restarting $NAME (restart $restarts)"
done
