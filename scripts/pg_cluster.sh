#!/usr/bin/env bash
# Private PostgreSQL 15 + TimescaleDB (Apache build) + pg_cron clusters for development and tests.
#
#   scripts/pg_cluster.sh install                     # system packages; TimescaleDB built once, then cached
#   scripts/pg_cluster.sh start [--dir DIR] [--port PORT] [--db NAME] [--fast]
#   scripts/pg_cluster.sh stop [--dir DIR]
#   scripts/pg_cluster.sh status [--dir DIR]
#
# `start` prints the connection URL as its last stdout line and writes it to DIR/url.
# Environment: QUAINT_CACHE_DIR (build cache, default ~/.cache/quaint), QUAINT_PG_VERSION (default 15),
# QUAINT_DEBIAN_MIRROR (overrides the mirror read from the apt configuration), QUAINT_PG_BIN (the
# PostgreSQL bin dir clusters run from, default /usr/lib/postgresql/$QUAINT_PG_VERSION/bin: e.g. a
# private installation with another TimescaleDB build, for `python -m bench scan` by hand).
set -euo pipefail

PG_MAJOR=${QUAINT_PG_VERSION:-15}
PG_BIN=${QUAINT_PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
CACHE_DIR=${QUAINT_CACHE_DIR:-$HOME/.cache/quaint}
DEFAULT_DB=btc_ml_production
# Debian 12 has no TimescaleDB package; Debian 13 ships its source, which builds against PostgreSQL 15.
TSDB_SOURCE_SUITE=trixie
BUILD_DEPS=("postgresql-server-dev-$PG_MAJOR" cmake build-essential libssl-dev dpkg-dev)

log() { printf '[pg_cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Commands that change the system need root; a sudoer gets sudo, anyone else a clear message.
as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -- "$@"
  else
    die "need root (or passwordless sudo) to run: $*"
  fi
}

pg_sharedir() { "$PG_BIN/pg_config" --sharedir; }
has_extension() { [[ -x $PG_BIN/pg_config && -f "$(pg_sharedir)/extension/$1.control" ]]; }
pkg_installed() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'; }

APT_UPDATED=0
apt_install() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install by hand: ${missing[*]}"
  # Update only when something is missing, and only once per run.
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" >&2
}

# The Debian archive URL from the machine's own apt configuration (never hard-coded in the repo).
debian_mirror() {
  if [[ -n ${QUAINT_DEBIAN_MIRROR:-} ]]; then echo "$QUAINT_DEBIAN_MIRROR"; return; fi
  local m=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $m && -f /etc/apt/sources.list ]]; then
    m=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
      /etc/apt/sources.list)
  fi
  [[ -n $m ]] || die "no Debian mirror in the apt configuration; set QUAINT_DEBIAN_MIRROR"
  echo "$m"
}

# Newest complete staging dir in the cache, if any ("complete" is written only after a full install).
cached_stage() {
  local d
  for d in "$CACHE_DIR"/timescaledb-*-pg"$PG_MAJOR"; do
    if [[ -f $d/complete ]]; then echo "$d"; fi
  done | sort -V | tail -n 1
}

build_timescaledb() {
  apt_install "${BUILD_DEPS[@]}"
  local work mirror
  work=$(mktemp -d)
  # Runs inside $(...), so this trap only cleans up after this function's subshell.
  # shellcheck disable=SC2064  # expand now: $work is local
  trap "rm -rf '$work'" EXIT
  local buildlog=$work/build.log
  # Build chatter goes to a log, shown only when a step fails.
  quiet() { "$@" >>"$buildlog" 2>&1 || { tail -n 40 "$buildlog" >&2; die "failed: $*"; }; }
  mirror=$(debian_mirror)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb-src $mirror $TSDB_SOURCE_SUITE main" >"$work/sources.list"
  # Private lists and cache: fetching trixie's source index leaves the system's apt state untouched.
  local o=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache")
  log "fetching the timescaledb source package from $TSDB_SOURCE_SUITE"
  quiet apt-get "${o[@]}" update
  (cd "$work" && quiet apt-get "${o[@]}" source timescaledb)
  local src version
  src=$(find "$work" -maxdepth 1 -type d -name 'timescaledb-*' | head -n 1)
  [[ -n $src ]] || die "apt-get source timescaledb produced no source tree"
  version=${src##*/timescaledb-}
  local stage="$CACHE_DIR/timescaledb-$version-pg$PG_MAJOR"
  log "building timescaledb $version (Apache edition) against PostgreSQL $PG_MAJOR"
  cd "$src"
  quiet ./bootstrap -DCMAKE_BUILD_TYPE=Release -DAPACHE_ONLY=1 -DPG_CONFIG="$PG_BIN/pg_config" \
    -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF \
    -DWARNINGS_AS_ERRORS=OFF
  quiet make -C build -j"$(nproc)"
  rm -rf "$stage"
  quiet make -C build install DESTDIR="$stage/root"
  # Written last, so an interrupted build is never mistaken for a usable cache entry.
  touch "$stage/complete"
  echo "$stage"
}

cmd_install() {
  [[ $# -eq 0 ]] || die "install takes no arguments"
  command -v dpkg-query >/dev/null 2>&1 || die "install supports Debian/Ubuntu only"
  apt_install "postgresql-$PG_MAJOR" "postgresql-$PG_MAJOR-cron"
  if has_extension timescaledb; then
    log "timescaledb already installed; nothing to build"
    return 0
  fi
  local stage
  stage=$(cached_stage)
  if [[ -n $stage ]]; then
    log "installing timescaledb from cache $stage"
  else
    stage=$(build_timescaledb)
  fi
  # The stage holds only the extension's .so files and SQL/control files under the PostgreSQL dirs.
  as_root cp -R --no-preserve=ownership "$stage/root/." /
  has_extension timescaledb || die "timescaledb still missing after install from $stage"
  log "timescaledb installed from $stage"
}

# ---- cluster management ----

DIR=""
PORT=""
DB=$DEFAULT_DB
FAST=0

parse_args() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
      --port) PORT=${2:?--port needs a value}; shift 2 ;;
      --db) DB=${2:?--db needs a value}; shift 2 ;;
      --fast) FAST=1; shift ;;
      *) die "unknown argument: $1" ;;
    esac
  done
  DIR=$(realpath -m "${DIR:-$PWD/.pgdata}")
  [[ -z $PORT || ($PORT =~ ^[0-9]+$ && $PORT -ge 1 && $PORT -le 65535) ]] || die "--port must be 1..65535"
  [[ $DB =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--db must be a plain identifier"
}

# PostgreSQL refuses to run as root, so root runs the server as the data dir's owner (postgres).
as_owner() {
  if [[ $EUID -eq 0 ]]; then
    runuser -u "$(stat -c %U "$DIR")" -- "$@"
  else
    "$@"
  fi
}

is_running() { [[ -f $DIR/PG_VERSION ]] && as_owner "$PG_BIN/pg_ctl" status -D "$DIR" >/dev/null 2>&1; }

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    local p
    for p in $(shuf -i 20000-60000 -n 50); do
      # A refused connection means nothing listens there.
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    die "no free port found"
  fi
}

url_for() { echo "postgresql://postgres:postgres@127.0.0.1:$1/$DB"; }

write_config() {
  local port=$1 socket_dir=$DIR
  # Unix socket paths are limited to 107 bytes; fall back to TCP only for deep directories.
  [[ ${#DIR} -lt 90 ]] || socket_dir=""
  {
    echo "# Written by scripts/pg_cluster.sh on every start; edit the script, not this file."
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$socket_dir'"
    echo "shared_preload_libraries = 'timescaledb,pg_cron'"
    echo "cron.database_name = '$DB'"
    echo "timescaledb.telemetry_level = off"
    # Small machine (2 cores, shared): modest memory, enough workers for TimescaleDB's launcher,
    # one scheduler per database that has the extension, and pg_cron.
    echo "max_connections = 100"
    echo "shared_buffers = 128MB"
    echo "work_mem = 8MB"
    echo "maintenance_work_mem = 64MB"
    echo "effective_cache_size = 512MB"
    echo "max_worker_processes = 24"
    echo "timescaledb.max_background_workers = 16"
    echo "max_parallel_workers_per_gather = 1"
    # drop_chunks and hypertable DDL lock every chunk in one transaction.
    echo "max_locks_per_transaction = 256"
    echo "log_min_messages = warning"
    echo "log_checkpoints = off"
    echo "log_line_prefix = '%m [%p] %d '"
    if [[ $FAST -eq 1 ]]; then
      # Throwaway test clusters only: durability is traded for speed.
      echo "fsync = off"
      echo "synchronous_commit = off"
      echo "full_page_writes = off"
    fi
  } | as_owner tee "$DIR/quaint.conf" >/dev/null
}

init_cluster() {
  local fresh=0
  [[ -f $DIR/PG_VERSION ]] || fresh=1
  if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' user: run scripts/pg_cluster.sh install"
    [[ $fresh -eq 0 ]] || chown postgres:postgres "$DIR"
    runuser -u postgres -- test -x "$DIR" ||
      die "user postgres cannot reach $DIR (a parent directory is not traversable); choose another --dir"
  fi
  [[ $fresh -eq 1 ]] || return 0
  chmod 700 "$DIR"
  log "initdb $DIR"
  local pwfile
  pwfile=$(mktemp)
  echo postgres >"$pwfile"
  if [[ $EUID -eq 0 ]]; then chown postgres "$pwfile"; fi
  # Trust on 127.0.0.1 only: a private, loopback-only test cluster; the password exists so that
  # ordinary postgresql://postgres:postgres@... URLs work unchanged against other servers too.
  as_owner "$PG_BIN/initdb" -D "$DIR" -U postgres --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=trust >/dev/null
  rm -f "$pwfile"
  echo "include_if_exists = 'quaint.conf'" | as_owner tee -a "$DIR/postgresql.conf" >/dev/null
}

cmd_start() {
  parse_args "$@"
  if is_running; then
    [[ -f $DIR/url ]] || die "a server runs in $DIR but was not started by this script (no $DIR/url)"
    cat "$DIR/url"
    return 0
  fi
  [[ -x $PG_BIN/postgres ]] || die "PostgreSQL $PG_MAJOR not found: run scripts/pg_cluster.sh install"
  has_extension timescaledb || die "timescaledb is not installed: run scripts/pg_cluster.sh install"
  has_extension pg_cron || die "pg_cron is not installed: run scripts/pg_cluster.sh install"
  mkdir -p "$DIR"
  init_cluster
  local explicit=$PORT attempt port
  [[ -n $PORT || ! -f $DIR/port ]] || PORT=$(cat "$DIR/port")
  # A picked port can be taken before the server binds it; pick again (unless the caller chose it).
  for attempt in 1 2 3; do
    port=${PORT:-$(free_port)}
    write_config "$port"
    if as_owner "$PG_BIN/pg_ctl" start -D "$DIR" -l "$DIR/server.log" -w -t 60 -s >&2; then
      break
    fi
    if [[ -n $explicit || $attempt -eq 3 ]]; then
      tail -n 20 "$DIR/server.log" >&2 || true
      die "server failed to start (log: $DIR/server.log)"
    fi
    log "start on port $port failed; retrying on another port"
    PORT=""
  done
  echo "$port" | as_owner tee "$DIR/port" >/dev/null
  local psql=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres)
  # pg_cron's worker waits for cron.database_name to exist; create it so the worker can start.
  if [[ -z $("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'") ]]; then
    "${psql[@]}" -c "CREATE DATABASE \"$DB\""
  fi
  url_for "$port" | as_owner tee "$DIR/url" >/dev/null
  cat "$DIR/url"
}

cmd_stop() {
  parse_args "$@"
  if ! is_running; then
    log "not running: $DIR"
    return 0
  fi
  as_owner "$PG_BIN/pg_ctl" stop -D "$DIR" -m fast -w -t 60 -s >&2
  log "stopped $DIR"
}

cmd_status() {
  parse_args "$@"
  if is_running; then
    log "running: $DIR"
    cat "$DIR/url"
  else
    log "not running: $DIR"
    return 3
  fi
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    *) die "usage: $0 {install|start [--dir DIR] [--port PORT] [--db NAME] [--fast]|stop [--dir DIR]|status [--dir DIR]}" ;;
  esac
}

main "$@"
