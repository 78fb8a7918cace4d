#!/usr/bin/env bash
# The whole Quaint2 suite on this machine, without Docker: the project's own PostgreSQL + TimescaleDB +
# pg_cron cluster, the feeder, the gap handler, Prometheus when installed, and (--simulate) the bundled
# Binance simulator. ./deploy.sh --local and ./cleanup.sh --local run this.
#
#   scripts/local_suite.sh up [--simulate]     start what is not running; return once all is healthy
#   scripts/local_suite.sh down [--volumes]    stop all it started; --volumes also deletes the run dir
#   scripts/local_suite.sh status              what runs, where, and its restarts (exit 3 when something
#                                              is down)
#   scripts/local_suite.sh env                 the running suite's settings as export lines, for the shell:
#                                              eval "$(scripts/local_suite.sh env)" sets DB_*, DATABASE_URL,
#                                              BINANCE_*, SYMBOLS, the ports and ADMIN_TOKEN (when set)
#
# A service that exits without a stop request is restarted with a growing delay (scripts/supervise.sh),
# as Docker's `restart: unless-stopped` does; `down` stops it for good.
#
# Everything lives in the run directory (QUAINT_RUN_DIR, default ./.run): pgdata/, logs/*.log, *.pid,
# *.state, suite.env, prometheus/. Settings come from the environment, then from .env (QUAINT_ENV_FILE);
# see .env.example, group "Local mode". Without --simulate the services use the real Binance endpoints
# and start only when they answer: there is never a silent switch to simulated data.
set -euo pipefail

QUAINT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=local
# shellcheck source=scripts/deploy_lib.sh
source "$QUAINT_ROOT/scripts/deploy_lib.sh"
# shellcheck source=scripts/local_procs.sh
source "$QUAINT_ROOT/scripts/local_procs.sh"
# shellcheck source=scripts/local_checks.sh
source "$QUAINT_ROOT/scripts/local_checks.sh"
cd "$QUAINT_ROOT"

load_env_file "$(env_file)"
# The seed's POSTGRES_DB names the database here too (the other two are replaced by the cluster's own).
resolve_db_aliases

RUN_DIR=$(realpath -m "${QUAINT_RUN_DIR:-$QUAINT_ROOT/.run}")
LOG_DIR=$RUN_DIR/logs
PGDATA_DIR=$RUN_DIR/pgdata
PROM_DIR=$RUN_DIR/prometheus
MARKER=$RUN_DIR/.quaint-run
# The settings the running suite's services got (written by up, deleted by down); `env` prints them.
SUITE_ENV=$RUN_DIR/suite.env
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

# For commands that take no option: -h/--help prints the usage, anything else is an error.
no_args() {
  local arg
  for arg in "$@"; do
    case $arg in
      -h | --help) usage ;;
      *) die "unknown argument: $arg" ;;
    esac
  done
}

# ---- up ----

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
    export ARCHIVE_BASE_URL=http://127.0.0.1:$SIM_PORT # it serves data.binance.vision's layout too
    export DATA_ORIGIN=simulated # the database is marked: a real run on it later refuses to start
  else
    export BINANCE_WS_URL=${BINANCE_WS_URL:-wss://stream.binance.com:9443}
    export BINANCE_REST_URL=${BINANCE_REST_URL:-https://api.binance.com}
    export DATA_ORIGIN=${DATA_ORIGIN:-binance}
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
  write_suite_env "$simulate" "$have_prometheus"
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

# The settings a shell needs to reach this suite as its services do (see cmd_env). Mode 600: it may hold
# ADMIN_TOKEN.
write_suite_env() {
  local simulate=$1 have_prometheus=$2 tmp
  tmp=$(umask 077 && mktemp "$SUITE_ENV.XXXXXX")
  {
    echo "# Written by scripts/local_suite.sh up; print it for a shell with: scripts/local_suite.sh env"
    echo "DB_HOST=$DB_HOST"
    echo "DB_PORT=$DB_PORT"
    echo "DB_USER=$DB_USER"
    echo "DB_PASSWORD=$DB_PASSWORD"
    echo "DB_NAME=$DB_NAME"
    echo "DATABASE_URL=postgresql://$DB_USER@$DB_HOST:$DB_PORT/$DB_NAME"
    echo "BINANCE_WS_URL=$BINANCE_WS_URL"
    echo "BINANCE_REST_URL=$BINANCE_REST_URL"
    echo "DATA_ORIGIN=$DATA_ORIGIN"
    echo "ARCHIVE_BASE_URL=${ARCHIVE_BASE_URL:-https://data.binance.vision}"
    echo "SYMBOLS=${SYMBOLS:-BTCUSDT}"
    echo "FEEDER_PORT=$FEEDER_PORT"
    echo "GAP_HANDLER_PORT=$GAP_HANDLER_PORT"
    [[ $have_prometheus -eq 0 ]] || echo "PROMETHEUS_PORT=$PROMETHEUS_PORT"
    [[ $simulate -eq 0 ]] || echo "SIM_PORT=$SIM_PORT"
    [[ -z ${ADMIN_TOKEN:-} ]] || echo "ADMIN_TOKEN=$ADMIN_TOKEN"
  } >"$tmp"
  mv -f "$tmp" "$SUITE_ENV"
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
  echo "  database     postgresql://$DB_USER@$DB_HOST:$DB_PORT/$DB_NAME (loopback only; no password needed)"
  echo "  DB_*         DB_HOST=$DB_HOST DB_PORT=$DB_PORT DB_USER=$DB_USER DB_NAME=$DB_NAME (not localhost:5432)"
  echo "  your shell   eval \"\$(scripts/local_suite.sh env)\"   sets DB_*, DATABASE_URL, BINANCE_*, DATA_ORIGIN, SYMBOLS and the ports"
  echo "  feeder       http://$fh:$FEEDER_PORT/health  http://$fh:$FEEDER_PORT/metrics"
  echo "  gap handler  http://$gh:$GAP_HANDLER_PORT/health  http://$gh:$GAP_HANDLER_PORT/metrics"
  echo "  coverage     http://$gh:$GAP_HANDLER_PORT/coverage.html  (per symbol and day: stored / missing / outage)"
  if running_pid prometheus >/dev/null; then
    local p=http://127.0.0.1:$PROMETHEUS_PORT
    # Debian's build serves its pages under /classic/ (it ships without the newer UI).
    if [[ $(http_status 127.0.0.1 "$PROMETHEUS_PORT" /classic/alerts) == 200 ]]; then p=$p/classic; fi
    echo "  prometheus   $p/alerts  $p/targets"
  fi
  if running_pid simulator >/dev/null; then echo "  simulator    http://127.0.0.1:$SIM_PORT (SIMULATED market data)"; fi
  echo "  logs         $LOG_DIR/*.log   (status and restarts: scripts/local_suite.sh status)"
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
  rm -f "$SUITE_ENV"
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

database_running() {
  [[ -f $PGDATA_DIR/PG_VERSION ]] && "$QUAINT_ROOT/scripts/pg_cluster.sh" status --dir "$PGDATA_DIR" >/dev/null 2>&1
}

cmd_status() {
  no_args "$@"
  local name down=0
  for name in simulator feeder gap_handler prometheus; do
    [[ -f $(pid_file "$name") || -f $(state_file "$name") ]] || continue
    describe_component "$name" || down=1
  done
  if database_running; then
    echo "database: running ($PGDATA_DIR, port $(cat "$PGDATA_DIR/port" 2>/dev/null || echo '?'))"
  else
    echo "database: not running"
    down=1
  fi
  return $((down * 3))
}

# ---- env ----

# export lines for eval: the values the running suite's services got, shell-quoted. The seed's
# POSTGRES_* aliases are unset, as they could contradict the DB_* values.
cmd_env() {
  no_args "$@"
  [[ -f $SUITE_ENV ]] || die "no local suite runs in $RUN_DIR: start it with ./deploy.sh --local [--simulate]"
  database_running ||
    die "the local suite in $RUN_DIR is not running (its database is down): ./deploy.sh --local [--simulate] starts it"
  local line value q="'"
  echo "unset POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB"
  while IFS= read -r line; do
    [[ $line =~ ^([A-Z_]+)=(.*)$ ]] || continue
    # Single-quoted, each ' written as '\'' : the shell takes the value literally.
    value=${BASH_REMATCH[2]//$q/$q\\$q$q}
    printf "export %s='%s'\n" "${BASH_REMATCH[1]}" "$value"
  done <"$SUITE_ENV"
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    -h | --help) usage ;;
    *) usage 2 ;;
  esac
}

main "$@"
