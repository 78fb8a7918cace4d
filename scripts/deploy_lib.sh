# shellcheck shell=bash
# Functions shared by deploy.sh, cleanup.sh and scripts/local_suite.sh (sourced, never run).
# The caller sets QUAINT_ROOT (the repository) and LOG_TAG before sourcing, and runs with set -euo pipefail.

: "${QUAINT_ROOT:?QUAINT_ROOT must be set before sourcing deploy_lib.sh}"
: "${LOG_TAG:=quaint}"
# Where the caller stood (the scripts cd to the repository after sourcing this): relative paths given on
# the command line are taken from here.
CALLER_PWD=$PWD
# A relative QUAINT_PYTHON given in the shell is the caller's path (QUAINT_PYTHON from .env, read after
# the cd, is taken from the repository: see local_suite.sh's python_bin).
if [[ ${QUAINT_PYTHON:-} == */* && $QUAINT_PYTHON != /* ]]; then
  export QUAINT_PYTHON=$CALLER_PWD/$QUAINT_PYTHON
fi

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
warn() { printf '[%s] warning: %s\n' "$LOG_TAG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$LOG_TAG" "$*" >&2; exit 1; }

# Print the running script's header comment (line 2 up to the first line that is not a comment) as its
# help, then exit with status ${1:-0}.
usage() {
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[-1]}"
  exit "${1:-0}"
}

# The settings file both modes read (QUAINT_ENV_FILE overrides; set it in the shell, not in the file).
env_file() { realpath -m "${QUAINT_ENV_FILE:-$QUAINT_ROOT/.env}"; }

# Export KEY=VALUE lines of a docker-compose style .env file. Variables already set in the environment
# win, as with docker compose. Values are taken literally (never evaluated by the shell); one pair of
# surrounding single or double quotes is removed.
load_env_file() {
  local file=$1 line key value n=0
  [[ -f $file ]] || return 0
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    line=${line#export }
    if [[ ! $line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*=(.*)$ ]]; then
      die "$file:$n: not a NAME=value line"
    fi
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
      value=${BASH_REMATCH[1]}
    fi
    [[ -n ${!key+set} ]] && continue
    export "$key=$value"
  done <"$file"
}

# The seed's names for three database settings, as NAME:ALIAS (docker-compose.yml and the services'
# settings accept them too). Either name of a pair may be set; both set (non-empty) to different values
# is an error. The project's name is exported and the alias removed from this environment, so it cannot
# contradict a DB_* value set later (local mode sets its own). Values are never printed.
DB_ALIASES=(DB_USER:POSTGRES_USER DB_PASSWORD:POSTGRES_PASSWORD DB_NAME:POSTGRES_DB)
resolve_db_aliases() {
  local pair name alias
  for pair in "${DB_ALIASES[@]}"; do
    name=${pair%%:*}
    alias=${pair#*:}
    [[ -n ${!alias:-} ]] || continue
    if [[ -n ${!name:-} && ${!name} != "${!alias}" ]]; then
      die "$name and $alias (the seed's name for $name) are both set, to different values; keep one of them"
    fi
    export "$name=${!alias}"
    unset "$alias"
  done
}

# The compose command line's global part, in the array COMPOSE_ARGS: the env file, then the compose
# files: docker-compose.yml followed by each of EXTRA_COMPOSE_FILES (deploy.sh/cleanup.sh -f FILE); with
# none of those, COMPOSE_FILE when set (compose's own variable, ':'-separated, relative to the
# repository), else docker-compose.yml alone. PROFILES (words) become --profile options.
EXTRA_COMPOSE_FILES=()
set_compose_args() {
  local env=$1 f
  shift
  COMPOSE_ARGS=()
  [[ ! -f $env ]] || COMPOSE_ARGS+=(--env-file "$env")
  if [[ ${#EXTRA_COMPOSE_FILES[@]} -gt 0 ]]; then
    COMPOSE_ARGS+=(-f "$QUAINT_ROOT/docker-compose.yml")
    for f in "${EXTRA_COMPOSE_FILES[@]}"; do COMPOSE_ARGS+=(-f "$f"); done
  elif [[ -z ${COMPOSE_FILE:-} ]]; then
    COMPOSE_ARGS+=(-f "$QUAINT_ROOT/docker-compose.yml")
  fi
  for f in "$@"; do COMPOSE_ARGS+=(--profile "$f"); done
}

# An extra compose file named on the command line, made absolute from the caller's directory.
add_compose_file() {
  local path=$1
  [[ $path == /* ]] || path=$CALLER_PWD/$path
  [[ -f $path ]] || die "compose file $1 not found"
  EXTRA_COMPOSE_FILES+=("$(realpath "$path")")
}

# Status code of GET http://HOST:PORT/PATH, or 000 when nothing answers; bash only (no curl needed).
http_status() {
  local host=$1 port=$2 path=$3 status=000 line fd
  if { exec {fd}<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
    if printf 'GET %s HTTP/1.0\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$path" "$host" "$port" 1>&"$fd" 2>/dev/null &&
      IFS= read -r -t 5 line <&"$fd" && [[ $line =~ ^HTTP/[0-9.]+\ ([0-9]{3}) ]]; then
      status=${BASH_REMATCH[1]}
    fi
    exec {fd}>&-
  fi
  echo "$status"
}

# True when something accepts TCP connections on HOST:PORT.
port_in_use() {
  local fd
  { exec {fd}<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1
  exec {fd}>&-
}

valid_port() { [[ $1 =~ ^[0-9]+$ && $1 -ge 1 && $1 -le 65535 ]]; }

# docker compose v2 (plugin), else the standalone docker-compose v2 binary; empty when neither exists.
compose_cmd() {
  if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    echo "docker compose"
  elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
    echo "docker-compose"
  fi
}

# True when the Docker engine answers COMPOSE (the command compose_cmd printed).
docker_engine_answers() {
  # shellcheck disable=SC2086  # "docker compose" is two words on purpose
  $1 ls >/dev/null 2>&1
}
