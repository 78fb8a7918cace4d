#!/usr/bin/env bash
# The whole Quaint2 suite on this machine, without Docker: the project's own PostgreSQL + TimescaleDB +
# pg_cron cluster, the feeder, the gap handler, Prometheus when installed, and (--simulate) the bundled
# Binance simulator. ./deploy.sh --local and ./cleanup.sh --local run this.
#
#   scripts/local_suite.sh up [--simulate]     start what is not running; return once all is healthy
#   scripts/local_suite.sh down [--volumes]    stop all it started; --volumes also deletes the run dir
#   scripts/local_suite.sh status              what runs, and where (exit 3 when something is down)
#
# Everything lives in the run directory (QUAINT_RUN_DIR, default ./.run): pgdata/, logs/*.log, *.pid,
# prometheus/. Settings come from the environment, then from .env (QUAINT_ENV_FILE); see .env.example,
# group "Local mode". Without --simulate the services use the real Binance endpoints and start only
# when they answer: there is never a silent switch to simulated data.
set -euo pipefail

QUAINT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=local
# shellcheck source=scripts/deploy_lib.sh
source "$QUAINT_ROOT/scripts/deploy_lib.sh"
cd "$QUAINT_ROOT"

load_env_file "$(env_file)"
# The seed's POSTGRES_DB names the database here too (the other two are replaced by the cluster's own).
resolve_db_aliases

RUN_DIR=$(realpath -m "${QUAINT_RUN_DIR:-$QUAINT_ROOT/.run}")
LOG_DIR=$RUN_DIR/logs
PGDATA_DIR=$RUN_DIR/pgdata
PROM_DIR=$RUN_DIR/prometheus
MARKER=$RUN_DIR/.quaint-run
STOP_TIMEOUT_S=${STOP_TIMEOUT_S:-30}
DEPLOY_TIMEOUT_S=${DEPLOY_TIMEOUT_S:-180}
[[ $DEPLOY_TIMEOUT_S =~ ^[0-9]+$ ]] || die "DEPLOY_TIMEOUT_S must be a whole number of seconds"
[[ $STOP_TIMEOUT_S =~ ^[0-9]+$ ]] || die "STOP_TIMEOUT_S must be a whole number of seconds"

FEEDER_PORT=${FEEDER_PORT:-8080}
GAP_HANDLER_PORT=${GAP_HANDLER_PORT:-9000}
SIM_PORT=${SIM_PORT:-9443}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
for v in FEEDER_PORT GAP_HANDLER_PORT SIM_PORT PROMETHEUS_PORT; do
  valid_port "${!v}" || die "$v must be a port number (1..65535), not '${!v}'"
done
# Local mode listens on loopback unless told otherwise.
FEEDER_HOST=${FEEDER_HOST:-127.0.0.1}
GAP_HANDLER_HOST=${GAP_HANDLER_HOST:-127.0.0.1}
DB_NAME=${DB_NAME:-btc_ml_production}

# Where to reach a service that listens on HOST (the wildcard addresses are reached over loopback).
probe_host() { case $1 in '' | 0.0.0.0 | :: | '[::]') echo 127.0.0.1 ;; *) echo "$1" ;; esac; }

# The interpreter that runs the services: QUAINT_PYTHON, else the project's .venv, which a fresh
# checkout gets made here (python3 -m venv + pip install -e .), as test.sh would.
python_bin() {
  if [[ -n ${QUAINT_PYTHON:-} ]]; then
    echo "$QUAINT_PYTHON"
    return
  fi
  local venv=$QUAINT_ROOT/.venv py
  if [[ ! -x $venv/bin/python ]]; then
    py=$(command -v python3) || die "python3 not found (Debian/Ubuntu: apt-get install python3 python3-venv)"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python >= 3.11 is needed; $py is older"
    log "creating $venv (first run)"
    "$py" -m venv "$venv" >&2 || die "could not create $venv (Debian/Ubuntu: apt-get install python3-venv)"
  fi
  echo "$venv/bin/python"
}

# ---- processes: started in their own session (setsid), so the whole group can be stopped ----

pid_file() { echo "$RUN_DIR/$1.pid"; }

# The command line a component's process must have, so a recycled pid is never mistaken for it.
marker_of() {
  case $1 in
    feeder) echo " -m feeder" ;;
    gap_handler) echo " -m gap_handler" ;;
    simulator) echo " -m simulator" ;;
    prometheus) echo "--config.file=$PROM_DIR/prometheus.yml" ;;
    *) die "unknown component $1" ;;
  esac
}

# Pid of a running component, or nothing (exit 1). Zombies have an empty command line: not running.
running_pid() {
  local file pid cmdline
  file=$(pid_file "$1")
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ " $cmdline" == *"$(marker_of "$1")"* ]] || return 1
  echo "$pid"
}

start_component() {
  local name=$1 pid
  shift
  if pid=$(running_pid "$name"); then
    log "$name already running (pid $pid); ./cleanup.sh --local first to restart it with new settings"
    return 0
  fi
  local logfile=$LOG_DIR/$name.log
  printf '\n===== %s: starting %s =====\n' "$(date -u +%FT%TZ)" "$name" >>"$logfile"
  setsid "$@" </dev/null >>"$logfile" 2>&1 &
  local child=$! deadline=$((SECONDS + 10))
  echo "$child" >"$(pid_file "$name")"
  # Until the child has exec'd, its command line is still this shell's: wait for that (or its end).
  while ! running_pid "$name" >/dev/null && process_alive "$child" && ((SECONDS < deadline)); do
    sleep 0.05
  done
  log "$name started (pid $child, log $logfile)"
}

# True while PID exists and is not a zombie.
process_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

stop_component() {
  local name=$1 pid deadline
  if ! pid=$(running_pid "$name"); then
    rm -f "$(pid_file "$name")"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT_S))
  while running_pid "$name" >/dev/null; do
    if ((SECONDS >= deadline)); then
      warn "$name did not stop within ${STOP_TIMEOUT_S}s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
    fi
    sleep 0.2
  done
  rm -f "$(pid_file "$name")"
}

show_log_tail() {
  local logfile=$LOG_DIR/$1.log
  [[ -f $logfile ]] || return 0
  log "last lines of $logfile:"
  tail -n "${2:-25}" "$logfile" | sed 's/^/    /' >&2
}

# Poll until every NAME:HOST:PORT:PATH answers 200, with a deadline; a component whose process exits
# fails at once with its log.
wait_healthy() {
  local deadline=$((SECONDS + DEPLOY_TIMEOUT_S)) spec name host port path code pending
  while :; do
    pending=()
    for spec in "$@"; do
      IFS=: read -r name host port path <<<"$spec"
      if ! running_pid "$name" >/dev/null; then
        show_log_tail "$name" 40
        die "$name exited during start-up (log: $LOG_DIR/$name.log)"
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

# True when FLAG, the one option a command takes, is among ARGS; -h/--help prints the usage, and any
# other argument is an error.
has_flag() {
  local flag=$1 arg found=1
  shift
  for arg in "$@"; do
    case $arg in
      "$flag") found=0 ;;
      -h | --help) usage ;;
      *) die "unknown argument: $arg" ;;
    esac
  done
  return "$found"
}

# ---- up ----

# The modules (of MODULE...) that do not import with PYTHON, e.g. for a missing dependency. Importing a
# service's __main__ runs nothing: each starts only under `python -m`.
missing_modules() {
  (cd / && "$1" - "${@:2}") <<'PY'
import importlib
import sys

missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
print(" ".join(missing))
PY
}

# The services must import; in the project's own .venv, install the project when they do not.
check_python() {
  local py=$1 missing
  shift
  missing=$(missing_modules "$py" "$@" 2>/dev/null) || missing="$*"
  [[ -n $missing ]] || return 0
  if [[ -z ${QUAINT_PYTHON:-} ]]; then
    log "installing the project into .venv (pip install -e .)"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$py" -m pip install -q -e "$QUAINT_ROOT" >&2 ||
      die "pip install -e . failed"
    missing=$(missing_modules "$py" "$@") || missing="$*"
    [[ -n $missing ]] || return 0
  fi
  die "cannot import $missing with $py: install the project there (pip install -e .)"
}

# The real exchange must answer before anything starts; a clear error otherwise.
check_binance() {
  local py=$1
  log "checking Binance: $BINANCE_REST_URL and $BINANCE_WS_URL"
  "$py" - "$BINANCE_REST_URL" "$BINANCE_WS_URL" <<'PY' || die "Binance is unreachable from this machine; nothing was started. Check the network, a proxy, or BINANCE_REST_URL/BINANCE_WS_URL in .env; for offline use run ./deploy.sh --local --simulate (the bundled simulator, clearly labelled as simulated data)."
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

rest, ws = sys.argv[1].rstrip("/"), sys.argv[2]
try:
    with urllib.request.urlopen(rest + "/api/v3/ping", timeout=10) as response:
        response.read()
except (urllib.error.URLError, OSError, ValueError) as exc:
    print(f"[local] error: GET {rest}/api/v3/ping failed: {exc}", file=sys.stderr)
    sys.exit(1)
url = urllib.parse.urlsplit(ws)
port = url.port or (443 if url.scheme == "wss" else 80)
try:
    socket.create_connection((url.hostname or "", port), timeout=10).close()
except OSError as exc:
    print(f"[local] error: cannot connect to {url.hostname}:{port} ({ws}): {exc}", file=sys.stderr)
    sys.exit(1)
PY
}

start_database() {
  local args=(start --dir "$PGDATA_DIR" --db "$DB_NAME") url
  if [[ -n ${LOCAL_DB_PORT:-} ]]; then
    valid_port "$LOCAL_DB_PORT" || die "LOCAL_DB_PORT must be a port number"
    args+=(--port "$LOCAL_DB_PORT")
  fi
  log "database: scripts/pg_cluster.sh install (a no-op once installed)"
  "$QUAINT_ROOT/scripts/pg_cluster.sh" install
  url=$("$QUAINT_ROOT/scripts/pg_cluster.sh" "${args[@]}" | tail -n 1)
  # pg_cluster.sh prints postgresql://USER:PASSWORD@HOST:PORT/DB (loopback only, trust authentication).
  [[ $url =~ ^postgresql://([^:@/]+):([^@/]*)@([^:/]+):([0-9]+)/([A-Za-z0-9_]+)$ ]] ||
    die "unexpected URL from scripts/pg_cluster.sh start"
  export DB_USER=${BASH_REMATCH[1]} DB_PASSWORD=${BASH_REMATCH[2]} DB_HOST=${BASH_REMATCH[3]}
  export DB_PORT=${BASH_REMATCH[4]} DB_NAME=${BASH_REMATCH[5]}
}

write_prometheus_config() {
  mkdir -p "$PROM_DIR/data"
  cat >"$PROM_DIR/prometheus.yml" <<EOF
# Written by scripts/local_suite.sh on every start; the compose version is prometheus/prometheus.yml.
global:
  scrape_interval: ${PROMETHEUS_SCRAPE_INTERVAL:-15s}
  evaluation_interval: ${PROMETHEUS_SCRAPE_INTERVAL:-15s}

rule_files:
  - "$QUAINT_ROOT/prometheus/alerts.yml"

scrape_configs:
  - job_name: feeder
    metrics_path: /metrics
    static_configs:
      - targets: ["$(probe_host "$FEEDER_HOST"):$FEEDER_PORT"]
        labels: {service: feeder}
  - job_name: gap_handler
    metrics_path: /metrics
    static_configs:
      - targets: ["$(probe_host "$GAP_HANDLER_HOST"):$GAP_HANDLER_PORT"]
        labels: {service: gap_handler}
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:$PROMETHEUS_PORT"]
EOF
}

# Refuse a port another program holds, naming the variable that moves it.
require_free_port() {
  local name=$1 var=$2 port=$3
  running_pid "$name" >/dev/null && return 0
  if port_in_use 127.0.0.1 "$port"; then
    die "port $port is already in use; set $var to another port (for $name)"
  fi
}

cmd_up() {
  local simulate=0
  if has_flag --simulate "$@"; then simulate=1; fi
  local py
  py=$(python_bin)
  local modules=(feeder.__main__ gap_handler.__main__)
  [[ $simulate -eq 0 ]] || modules+=(simulator.__main__)
  check_python "$py" "${modules[@]}"

  local have_prometheus=0
  if command -v prometheus >/dev/null 2>&1; then have_prometheus=1; fi
  require_free_port feeder FEEDER_PORT "$FEEDER_PORT"
  require_free_port gap_handler GAP_HANDLER_PORT "$GAP_HANDLER_PORT"
  [[ $simulate -eq 0 ]] || require_free_port simulator SIM_PORT "$SIM_PORT"
  [[ $have_prometheus -eq 0 ]] || require_free_port prometheus PROMETHEUS_PORT "$PROMETHEUS_PORT"

  if [[ $simulate -eq 1 ]]; then
    export BINANCE_WS_URL=ws://127.0.0.1:$SIM_PORT BINANCE_REST_URL=http://127.0.0.1:$SIM_PORT
  else
    export BINANCE_WS_URL=${BINANCE_WS_URL:-wss://stream.binance.com:9443}
    export BINANCE_REST_URL=${BINANCE_REST_URL:-https://api.binance.com}
    if running_pid simulator >/dev/null; then
      die "the simulator from an earlier --simulate run is still running; ./cleanup.sh --local first"
    fi
    check_binance "$py"
  fi

  mkdir -p "$RUN_DIR" "$LOG_DIR"
  touch "$MARKER"
  trap up_failed EXIT
  # The database runs as the postgres user when we are root: it must be able to enter the run dir.
  if [[ $EUID -eq 0 ]]; then chmod a+x "$RUN_DIR"; fi

  if [[ $simulate -eq 1 ]]; then
    local sim_args=(-m simulator --port "$SIM_PORT")
    [[ -n ${SIM_SYMBOLS:-} ]] || sim_args+=(--symbols "${SYMBOLS:-BTCUSDT}")
    start_component simulator "$py" "${sim_args[@]}"
    wait_healthy "simulator:127.0.0.1:$SIM_PORT:/api/v3/ping"
    log "SIMULATED market data: the services read the bundled simulator at 127.0.0.1:$SIM_PORT, not Binance"
  fi

  start_database
  export FEEDER_HOST FEEDER_PORT GAP_HANDLER_HOST GAP_HANDLER_PORT
  start_component feeder "$py" -m feeder
  start_component gap_handler "$py" -m gap_handler
  local checks=("feeder:$(probe_host "$FEEDER_HOST"):$FEEDER_PORT:/health"
    "gap_handler:$(probe_host "$GAP_HANDLER_HOST"):$GAP_HANDLER_PORT:/health")
  if [[ $have_prometheus -eq 1 ]]; then
    write_prometheus_config
    start_component prometheus prometheus --config.file="$PROM_DIR/prometheus.yml" \
      --storage.tsdb.path="$PROM_DIR/data" --storage.tsdb.retention.time="${PROMETHEUS_RETENTION:-15d}" \
      --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"
    checks+=("prometheus:127.0.0.1:$PROMETHEUS_PORT:/-/ready")
  else
    warn "prometheus is not installed (Debian: apt-get install --no-install-recommends prometheus); running without it"
  fi
  log "waiting up to ${DEPLOY_TIMEOUT_S}s for health"
  wait_healthy "${checks[@]}"
  trap - EXIT
  print_urls
}

# On a failed start, say what is still running (left up for inspection) and how to stop it.
up_failed() {
  local name running=()
  for name in simulator feeder gap_handler prometheus; do
    if running_pid "$name" >/dev/null; then running+=("$name"); fi
  done
  if [[ -f $PGDATA_DIR/postmaster.pid ]]; then running+=(database); fi
  if [[ ${#running[@]} -gt 0 ]]; then
    log "start-up failed; still running for inspection: ${running[*]} (logs: $LOG_DIR). Stop them: ./cleanup.sh --local"
  fi
}

print_urls() {
  local fh gh
  fh=$(probe_host "$FEEDER_HOST")
  gh=$(probe_host "$GAP_HANDLER_HOST")
  echo "Quaint2 is up (local mode; run dir $RUN_DIR)"
  echo "  database     postgresql://${DB_USER:-postgres}@${DB_HOST:-127.0.0.1}:${DB_PORT:-?}/$DB_NAME (loopback only)"
  echo "  feeder       http://$fh:$FEEDER_PORT/health  http://$fh:$FEEDER_PORT/metrics"
  echo "  gap handler  http://$gh:$GAP_HANDLER_PORT/health  http://$gh:$GAP_HANDLER_PORT/metrics"
  if running_pid prometheus >/dev/null; then echo "  prometheus   http://127.0.0.1:$PROMETHEUS_PORT"; fi
  if running_pid simulator >/dev/null; then echo "  simulator    http://127.0.0.1:$SIM_PORT (SIMULATED market data)"; fi
  echo "  logs         $LOG_DIR/*.log"
  echo "  stop         ./cleanup.sh --local   (add --volumes to delete the data too)"
}

# ---- down ----

cmd_down() {
  local volumes=0
  if has_flag --volumes "$@"; then volumes=1; fi
  if [[ ! -d $RUN_DIR ]]; then
    log "nothing to stop: $RUN_DIR does not exist"
    return 0
  fi
  local name
  for name in prometheus gap_handler feeder simulator; do
    stop_component "$name"
  done
  if [[ -f $PGDATA_DIR/PG_VERSION ]]; then
    "$QUAINT_ROOT/scripts/pg_cluster.sh" stop --dir "$PGDATA_DIR"
  fi
  if [[ $volumes -eq 1 ]]; then
    # Only a directory this script made (it has the marker) is ever deleted.
    [[ -f $MARKER ]] || die "$RUN_DIR has no $(basename "$MARKER") marker; not deleting it"
    rm -rf -- "$RUN_DIR"
    log "deleted $RUN_DIR (database, logs, Prometheus data)"
  fi
  log "local suite stopped"
}

# ---- status ----

cmd_status() {
  local name pid down=0
  for name in simulator feeder gap_handler prometheus; do
    if pid=$(running_pid "$name"); then
      echo "$name: running (pid $pid)"
    elif [[ -f $(pid_file "$name") ]]; then
      echo "$name: NOT running (stale pid file; log $LOG_DIR/$name.log)"
      down=1
    fi
  done
  if [[ -f $PGDATA_DIR/PG_VERSION ]] && "$QUAINT_ROOT/scripts/pg_cluster.sh" status --dir "$PGDATA_DIR" >/dev/null 2>&1; then
    echo "database: running ($PGDATA_DIR)"
  else
    echo "database: not running"
    down=1
  fi
  return $((down * 3))
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help) usage ;;
    *) usage 2 ;;
  esac
}

main "$@"
