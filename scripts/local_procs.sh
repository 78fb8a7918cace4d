# shellcheck shell=bash
# The local suite's processes (sourced by scripts/local_suite.sh, never run): each component runs under
# scripts/supervise.sh in a session of its own (setsid), so the whole group can be stopped, and a crash
# is followed by a restart. The caller sets RUN_DIR, LOG_DIR and PROM_DIR and has sourced deploy_lib.sh.
#
# Per component NAME in RUN_DIR: NAME.pid (the supervisor, the group's leader), NAME.state (what
# supervise.sh writes: state, child, restarts, last_exit, ...), and logs/NAME.log.

pid_file() { echo "$RUN_DIR/$1.pid"; }
state_file() { echo "$RUN_DIR/$1.state"; }

# The command line a component's processes must have (the supervisor's includes its child's), so a
# recycled pid is never mistaken for one of them.
marker_of() {
  case $1 in
    feeder) echo " -m feeder" ;;
    gap_handler) echo " -m gap_handler" ;;
    simulator) echo " -m simulator" ;;
    prometheus) echo "--config.file=$PROM_DIR/prometheus.yml" ;;
    *) die "unknown component $1" ;;
  esac
}

# True when PID runs and its command line has NAME's marker. Zombies have an empty command line.
pid_is() {
  local pid=$1 name=$2 cmdline
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ " $cmdline" == *"$(marker_of "$name")"* ]]
}

# True while PID exists and is not a zombie.
process_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# Pid of a component's supervisor, or nothing (exit 1).
running_pid() {
  local file pid
  file=$(pid_file "$1")
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  pid_is "$pid" "$1" || return 1
  echo "$pid"
}

# KEY's value in a component's state file (empty when there is none).
state_value() {
  local file
  file=$(state_file "$1")
  [[ -f $file ]] || return 0
  sed -n "s/^$2=//p" "$file" | head -n 1
}

# Pid of the service process itself (the supervisor's child), or nothing (exit 1).
service_pid() {
  local pid
  pid=$(state_value "$1" child)
  [[ -n $pid ]] && pid_is "$pid" "$1" || return 1
  echo "$pid"
}

# Components started by this invocation (a component already running is left as it is).
declare -A STARTED_NOW=()

start_component() {
  local name=$1 pid
  shift
  if pid=$(running_pid "$name"); then
    log "$name already running (pid $pid); ./cleanup.sh --local first to restart it with new settings"
    return 0
  fi
  local logfile=$LOG_DIR/$name.log state
  state=$(state_file "$name")
  rm -f "$state"
  printf '\n===== %s: starting %s =====\n' "$(date -u +%FT%TZ)" "$name" >>"$logfile"
  setsid "$QUAINT_ROOT/scripts/supervise.sh" "$name" "$state" "$@" </dev/null >>"$logfile" 2>&1 &
  local supervisor=$! deadline=$((SECONDS + 10))
  echo "$supervisor" >"$(pid_file "$name")"
  STARTED_NOW[$name]=1
  # Until the supervisor has started its child, the service is not there yet: wait for that (or its end).
  while [[ -z $(state_value "$name" child) ]] && process_alive "$supervisor" && ((SECONDS < deadline)); do
    sleep 0.05
  done
  log "$name started (pid $(state_value "$name" child), restarted on a crash; log $logfile)"
}

stop_component() {
  local name=$1 pid child deadline
  child=$(service_pid "$name") || child=""
  if pid=$(running_pid "$name"); then
    log "stopping $name (pid ${child:-$pid})"
    # The supervisor alone: it passes the stop on to its child exactly once, and does not restart it.
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while running_pid "$name" >/dev/null; do
      if ((SECONDS >= deadline)); then
        warn "$name did not stop within ${STOP_TIMEOUT_S}s; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
      fi
      sleep 0.2
    done
  fi
  # A service whose supervisor was killed runs on alone: stop it too.
  if [[ -n $child ]] && pid_is "$child" "$name"; then
    log "stopping $name (pid $child, without its supervisor)"
    kill -TERM "$child" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT_S))
    while pid_is "$child" "$name" && process_alive "$child"; do
      if ((SECONDS >= deadline)); then kill -KILL "$child" 2>/dev/null || true; fi
      sleep 0.2
    done
  fi
  rm -f "$(pid_file "$name")" "$(state_file "$name")"
}

# The last LINES lines (default 25) a component logged since its latest start by this script, so that
# a failure is shown with this run's lines only, never an earlier run's.
show_log_tail() {
  local name=$1 lines=${2:-25} logfile from
  logfile=$LOG_DIR/$name.log
  [[ -f $logfile ]] || return 0
  from=$(grep -n "^===== .*: starting $name =====\$" "$logfile" | tail -n 1 | cut -d: -f1)
  log "$name's log since this start (last $lines lines; all of it: $logfile):"
  tail -n +"${from:-1}" "$logfile" | tail -n "$lines" | sed 's/^/    /' >&2
}

# One line on a component for `status`; exit 1 when it is not running right now.
describe_component() {
  local name=$1 pid child state restarts last at next
  state=$(state_value "$name" state)
  restarts=$(state_value "$name" restarts)
  last=$(state_value "$name" last_exit)
  at=$(state_value "$name" last_exit_at)
  local history="no restarts"
  if [[ -n $last ]]; then history="restarts ${restarts:-0}, last exit: $(exit_text "$last") at $at"; fi
  if pid=$(running_pid "$name"); then
    if child=$(service_pid "$name"); then
      echo "$name: running (pid $child; $history)"
      return 0
    fi
    next=$(state_value "$name" next_start_at)
    if [[ $state == waiting && -n $next ]]; then
      local now
      now=$(date +%s)
      echo "$name: RESTARTING ($history; next start in $((next > now ? next - now : 0))s; log $LOG_DIR/$name.log)"
    else
      echo "$name: starting (supervisor pid $pid; $history)"
    fi
    return 1
  fi
  if [[ $state == gave-up ]]; then
    echo "$name: NOT running (exited with code 2, bad configuration, at $at; not restarted; log $LOG_DIR/$name.log)"
  elif child=$(service_pid "$name"); then
    echo "$name: running (pid $child) WITHOUT its supervisor: not restarted if it crashes" \
      "(./cleanup.sh --local, then ./deploy.sh --local)"
    return 0
  else
    echo "$name: NOT running (stale pid file; log $LOG_DIR/$name.log)"
  fi
  return 1
}

exit_text() {
  if (($1 > 128)); then echo "signal $(kill -l $(($1 - 128)) 2>/dev/null || echo $(($1 - 128)))"; else echo "code $1"; fi
}

# Poll until every NAME:HOST:PORT:PATH answers 200, with a deadline. A component started now whose
# service exits before that fails the start at once, with this run's log (its supervisor restarts it
# meanwhile); one that was already running only has to answer (or come back) in time.
wait_healthy() {
  local deadline=$((SECONDS + DEPLOY_TIMEOUT_S)) spec name host port path code pending last
  while :; do
    pending=()
    for spec in "$@"; do
      IFS=: read -r name host port path <<<"$spec"
      last=""
      [[ -z ${STARTED_NOW[$name]:-} ]] || last=$(state_value "$name" last_exit)
      if ! running_pid "$name" >/dev/null || [[ -n $last ]]; then
        show_log_tail "$name" 40
        die "$name exited during start-up (${last:+$(exit_text "$last"); }log: $LOG_DIR/$name.log)"
      fi
      code=$(http_status "$host" "$port" "$path")
      [[ $code == 200 ]] || pending+=("$name: GET http://$host:$port$path -> $code")
    done
    [[ ${#pending[@]} -eq 0 ]] && return 0
    if ((SECONDS >= deadline)); then
      for spec in "$@"; do
        IFS=: read -r name _ <<<"$spec"
        show_log_tail "$name"
      done
      die "not healthy within ${DEPLOY_TIMEOUT_S}s: ${pending[*]} (still running: ./cleanup.sh --local stops it)"
    fi
    sleep 0.5
  done
}
