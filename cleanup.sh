#!/usr/bin/env bash
# Stop Quaint2 and remove what ./deploy.sh started.
#
#   ./cleanup.sh [--volumes]           Docker: docker compose down; --volumes also deletes the named
#                                      volumes (the database, pgAdmin's and Prometheus's data).
#   ./cleanup.sh --local [--volumes]   Local mode: stops the processes and the database cluster that
#                                      ./deploy.sh --local started; --volumes also deletes the run
#                                      directory (.run/, or QUAINT_RUN_DIR).
#
# Data is kept unless --volumes is given.
set -euo pipefail

QUAINT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=cleanup
# shellcheck source=scripts/deploy_lib.sh
source "$QUAINT_ROOT/scripts/deploy_lib.sh"
cd "$QUAINT_ROOT"

LOCAL=0
VOLUMES=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --local) LOCAL=1; shift ;;
    --volumes) VOLUMES=1; shift ;;
    -h | --help) usage ;;
    *) log "unknown argument: $1"; usage 2 ;;
  esac
done

if [[ $LOCAL -eq 1 ]]; then
  args=(down)
  [[ $VOLUMES -eq 0 ]] || args+=(--volumes)
  exec "$QUAINT_ROOT/scripts/local_suite.sh" "${args[@]}"
fi

compose=$(compose_cmd)
[[ -n $compose ]] || die "Docker Compose v2 not found (docker compose / docker-compose); for the local suite use ./cleanup.sh --local"
file=$(env_file)
down_args=(down --remove-orphans)
if [[ $VOLUMES -eq 1 ]]; then
  down_args+=(--volumes)
  log "removing the containers AND the volumes (database, pgAdmin and Prometheus data)"
fi
# compose needs the variables the file refers to even to tear down; without .env, pass dummies, which
# are used for nothing but interpolation.
env_args=()
if [[ -f $file ]]; then
  env_args=(--env-file "$file")
else
  export DB_PASSWORD=${DB_PASSWORD:-unused} PGADMIN_DEFAULT_PASSWORD=${PGADMIN_DEFAULT_PASSWORD:-unused}
  export PGADMIN_DEFAULT_EMAIL=${PGADMIN_DEFAULT_EMAIL:-unused@example.com}
fi
# shellcheck disable=SC2086  # "docker compose" is two words on purpose
$compose "${env_args[@]}" -f "$QUAINT_ROOT/docker-compose.yml" "${down_args[@]}"
log "stopped$([[ $VOLUMES -eq 1 ]] && echo ' and removed the volumes' || echo '; volumes kept (--volumes deletes them)')"
