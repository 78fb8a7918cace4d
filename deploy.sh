#!/usr/bin/env bash
# Start Quaint2 and wait until it is healthy.
#
#   ./deploy.sh [--simulate] [--generate-secrets] [--pull POLICY] [-f FILE]...
#                                         Docker: docker compose up (TimescaleDB, feeder, gap handler,
#                                         pgAdmin, Prometheus); refuses placeholder passwords in .env.
#                                         The services read BINANCE_* from .env (default: the real
#                                         Binance); --simulate also runs the bundled Binance simulator
#                                         as the compose service "simulator" (profile "simulate") and
#                                         points both services at it. --generate-secrets writes strong
#                                         passwords and an ADMIN_TOKEN first (creating .env from
#                                         .env.example when there is none). --pull always|missing|never
#                                         is compose's pull policy (never: use only local images). -f FILE adds a compose file
#                                         after docker-compose.yml (repeatable); without -f, COMPOSE_FILE
#                                         (compose's own variable) is honoured when set.
#   ./deploy.sh --local [--simulate] [--generate-secrets]
#                                         No Docker: the project's own database cluster, the feeder, the
#                                         gap handler and Prometheus (when installed) as background
#                                         processes under .run/, restarted when they crash; --simulate
#                                         also starts the bundled Binance simulator and points both
#                                         services at it. --generate-secrets as above (local mode uses
#                                         ADMIN_TOKEN from .env; the passwords are for Docker).
#
# Settings: .env (QUAINT_ENV_FILE chooses another file), documented in .env.example; the seed's
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB are accepted for DB_USER / DB_PASSWORD / DB_NAME.
# DEPLOY_TIMEOUT_S bounds the wait for health (default 180). Stop with ./cleanup.sh [--local] [--volumes].
set -euo pipefail

QUAINT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=deploy
# shellcheck source=scripts/deploy_lib.sh
source "$QUAINT_ROOT/scripts/deploy_lib.sh"
cd "$QUAINT_ROOT"

# Variables that must hold a real secret before the Docker suite starts.
SECRET_VARS=(DB_PASSWORD PGADMIN_DEFAULT_PASSWORD)
PLACEHOLDER=CHANGE_ME
MIN_SECRET_LENGTH=12

new_secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

# Replace every placeholder secret in FILE by a fresh random one (48 hex characters); the values are
# never printed. Creates FILE from .env.example when it does not exist. The seed's POSTGRES_PASSWORD, an
# alias of DB_PASSWORD, gets the same value as DB_PASSWORD. ADMIN_TOKEN (both modes: it opens the gap
# handler's POST /backfills) is kept when FILE gives it a value; else it is written where FILE has an
# empty or placeholder line for it (.env.example's "# ADMIN_TOKEN="), or appended.
generate_secrets() {
  local file=$1 tmp name line key changed=() token=""
  local -A generated=()
  if [[ ! -f $file ]]; then
    [[ -f $QUAINT_ROOT/.env.example ]] || die ".env.example not found"
    (umask 077 && cp "$QUAINT_ROOT/.env.example" "$file")
    log "created $file from .env.example"
  fi
  if ! grep -Eq "^ADMIN_TOKEN=\"?[^\"]" "$file" || grep -Eq "^ADMIN_TOKEN=\"?$PLACEHOLDER\"?$" "$file"; then
    token=$(new_secret)
  fi
  tmp=$(mktemp "$file.XXXXXX")
  while IFS= read -r line || [[ -n $line ]]; do
    for name in "${SECRET_VARS[@]}" POSTGRES_PASSWORD; do
      if [[ $line =~ ^$name=(\"?)($PLACEHOLDER)?(\"?)$ ]]; then
        key=${name/#POSTGRES_PASSWORD/DB_PASSWORD}
        [[ -n ${generated[$key]:-} ]] || generated[$key]=$(new_secret)
        line="$name=${generated[$key]}"
        changed+=("$name")
      fi
    done
    if [[ -n $token && $line =~ ^(#\ )?ADMIN_TOKEN=(\"?)($PLACEHOLDER)?(\"?)$ ]]; then
      line="ADMIN_TOKEN=$token"
      [[ ${changed[*]} == *ADMIN_TOKEN* ]] || changed+=(ADMIN_TOKEN)
    fi
    printf '%s\n' "$line"
  done <"$file" >"$tmp"
  if [[ -n $token && ${changed[*]} != *ADMIN_TOKEN* ]]; then
    {
      echo "# Gap handler: bearer token for POST /backfills (written by ./deploy.sh --generate-secrets)."
      echo "ADMIN_TOKEN=$token"
    } >>"$tmp"
    changed+=(ADMIN_TOKEN)
  fi
  chmod 600 "$tmp"
  mv -f "$tmp" "$file"
  if [[ ${#changed[@]} -gt 0 ]]; then
    log "generated ${changed[*]} in $file (mode 600; the values are not shown)"
  else
    log "no placeholder secrets left in $file; nothing generated"
  fi
}

# Refuse to start with a missing, empty, placeholder or short secret (the environment overrides .env,
# as with docker compose).
check_secrets() {
  local file=$1 name value bad=()
  [[ -f $file ]] || die "$file not found: cp .env.example .env and set the passwords, or run ./deploy.sh --generate-secrets"
  for name in "${SECRET_VARS[@]}"; do
    value=${!name:-}
    if [[ -z $value || $value == "$PLACEHOLDER" ]]; then
      bad+=("$name")
    elif [[ ${#value} -lt $MIN_SECRET_LENGTH ]]; then
      bad+=("$name (shorter than $MIN_SECRET_LENGTH characters)")
    fi
  done
  if [[ ${#bad[@]} -gt 0 ]]; then
    die "refusing to start: placeholder or weak secret in $file: ${bad[*]}. Set strong values, or run ./deploy.sh --generate-secrets"
  fi
}

deploy_docker() {
  local file
  file=$(env_file)
  if [[ $GENERATE -eq 1 ]]; then generate_secrets "$file"; fi
  load_env_file "$file"
  resolve_db_aliases
  check_secrets "$file"
  local compose
  compose=$(compose_cmd)
  [[ -n $compose ]] || die "Docker Compose v2 not found (docker compose / docker-compose). Install Docker, or run without it: ./deploy.sh --local"
  docker_engine_answers "$compose" || die "the Docker engine does not answer ($compose ls failed). Start it, or run without Docker: ./deploy.sh --local"
  local timeout=${DEPLOY_TIMEOUT_S:-180}
  [[ $timeout =~ ^[0-9]+$ ]] || die "DEPLOY_TIMEOUT_S must be a whole number of seconds"
  local profiles=()
  if [[ $SIMULATE -eq 1 ]]; then
    profiles=(simulate)
    export BINANCE_WS_URL=ws://simulator:$SIM_CONTAINER_PORT BINANCE_REST_URL=http://simulator:$SIM_CONTAINER_PORT
    export ARCHIVE_BASE_URL=http://simulator:$SIM_CONTAINER_PORT # it serves data.binance.vision's layout too
    export DATA_ORIGIN=simulated # the database is marked: a real run on it later refuses to start
    log "SIMULATED market data: the services read the bundled simulator (compose service 'simulator'), not Binance"
  else
    log "market data from ${BINANCE_REST_URL:-https://api.binance.com} and ${BINANCE_WS_URL:-wss://stream.binance.com:9443} (BINANCE_* in $file; --simulate for the bundled simulator)"
  fi
  set_compose_args "$file" "${profiles[@]}"
  local up=(up -d --build --wait --wait-timeout "$timeout")
  [[ -z $PULL ]] || up+=(--pull "$PULL")
  log "docker compose up (build, then wait up to ${timeout}s for every health check)"
  # shellcheck disable=SC2086  # "docker compose" is two words on purpose
  if ! $compose "${COMPOSE_ARGS[@]}" "${up[@]}"; then
    # shellcheck disable=SC2086
    $compose "${COMPOSE_ARGS[@]}" ps -a >&2 || true
    die "the suite did not become healthy; see: $compose logs --tail 50"
  fi
  local sb=${SERVICES_BIND:-127.0.0.1} pb=${PGADMIN_BIND:-127.0.0.1}
  [[ $sb != 0.0.0.0 ]] || sb=127.0.0.1
  [[ $pb != 0.0.0.0 ]] || pb=127.0.0.1
  echo "Quaint2 is up (Docker$([[ $SIMULATE -eq 1 ]] && echo '; SIMULATED market data'))"
  echo "  feeder       http://$sb:${FEEDER_PUBLISH_PORT:-8080}/health  /metrics"
  echo "  gap handler  http://$sb:${GAP_HANDLER_PUBLISH_PORT:-9000}/health  /metrics  /coverage.html (coverage heat map)"
  echo "  prometheus   http://$sb:${PROMETHEUS_PUBLISH_PORT:-9090}"
  echo "  pgadmin      http://$pb:${PGADMIN_PORT:-8000}  (login ${PGADMIN_DEFAULT_EMAIL:-?}; the server 'timescaledb' is pre-configured)"
  echo "  database     ${DB_BIND:-127.0.0.1}:${DB_PUBLISH_PORT:-5432}, database ${DB_NAME:-btc_ml_production}, user ${DB_USER:-postgres}"
  if [[ $SIMULATE -eq 1 ]]; then
    echo "  simulator    http://$sb:${SIM_PUBLISH_PORT:-9443}  (SIMULATED market data; control API /_sim/...)"
  fi
  echo "  stop         ./cleanup.sh   (add --volumes to delete the data too)"
}

LOCAL=0
SIMULATE=0
GENERATE=0
PULL=""
# The simulator's port inside the compose network (docker-compose.yml sets SIM_PORT to it).
SIM_CONTAINER_PORT=9443
while [[ $# -gt 0 ]]; do
  case $1 in
    --local) LOCAL=1; shift ;;
    --simulate) SIMULATE=1; shift ;;
    --generate-secrets) GENERATE=1; shift ;;
    --pull)
      PULL=${2:-}
      [[ $PULL =~ ^(always|missing|never)$ ]] || die "--pull needs always, missing or never"
      shift 2
      ;;
    -f | --file)
      [[ $# -ge 2 ]] || die "$1 needs a compose file"
      add_compose_file "$2"
      shift 2
      ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage 2 ;;
  esac
done

if [[ $LOCAL -eq 1 ]]; then
  [[ -z $PULL && ${#EXTRA_COMPOSE_FILES[@]} -eq 0 ]] || die "--pull and -f are for the Docker suite, not --local"
  if [[ $GENERATE -eq 1 ]]; then generate_secrets "$(env_file)"; fi
  args=(up)
  [[ $SIMULATE -eq 0 ]] || args+=(--simulate)
  exec "$QUAINT_ROOT/scripts/local_suite.sh" "${args[@]}"
fi
deploy_docker
