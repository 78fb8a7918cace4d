# shellcheck shell=bash
# Functions shared by deploy.sh, cleanup.sh and scripts/local_suite.sh (sourced, never run).
# The caller sets QUAINT_ROOT (the repository) and LOG_TAG before sourcing, and runs with set -euo pipefail.

: "${QUAINT_ROOT:?QUAINT_ROOT must be set before sourcing deploy_lib.sh}"
: "${LOG_TAG:=quaint}"

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
