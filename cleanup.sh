#!/usr/bin/env bash
# Stop Quaint2 and remove what ./deploy.sh started.
#
#   ./cleanup.sh [--volumes] [-f FILE]...
#                                      Docker: docker compose down (every container of the project,
#                                      the simulator's too, and its network); --volumes also deletes
#                                      the named volumes (the database, pgAdmin's and Prometheus's
#                                      data). Images are kept. -f FILE / COMPOSE_FILE as for deploy.sh.
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
  [[ ${#EXTRA_COMPOSE_FILES[@]} -eq 0 ]] || die "-f is for the Docker suite, not --local"
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
# compose needs the variables the file requires even to tear down: what .env has, else dummies, which
# are used for nothing but interpolation.
load_env_file "$file"
export PGADMIN_DEFAULT_PASSWORD=${PGADMIN_DEFAULT_PASSWORD:-unused}
export PGADMIN_DEFAULT_EMAIL=${PGADMIN_DEFAULT_EMAIL:-unused@example.com}
# The "simulate" profile too, so that the simulator of a --simulate run is removed with the rest.
set_compose_args "$file" simulate
# shellcheck disable=SC2086  # "docker compose" is two words on purpose
$compose "${COMPOSE_ARGS[@]}" "${down_args[@]}"
log "stopped$([[ $VOLUMES -eq 1 ]] && echo ' and removed the volumes' || echo '; volumes kept (--volumes deletes them)')"
