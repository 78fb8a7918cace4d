#!/usr/bin/env bash
# TEST STAND-IN for the official postgres / timescale images' docker-entrypoint.sh (what compose and the
# test harness rely on, nothing more). As root it fixes the data directory's owner and re-runs itself as
# postgres; on the first start it runs initdb with POSTGRES_USER/POSTGRES_PASSWORD, creates POSTGRES_DB,
# runs /docker-entrypoint-initdb.d/* against a server listening on its socket only, stops it, and then
# execs the real server (so health checks over TCP pass only once initialisation is over).
set -euo pipefail

log() { printf '[standin-entrypoint] %s\n' "$*" >&2; }

# `docker run IMAGE -c fsync=off` means `postgres -c fsync=off`.
if [[ ${1:-} == -* ]]; then set -- postgres "$@"; fi
if [[ ${1:-} != postgres ]]; then exec "$@"; fi

if [[ $(id -u) == 0 ]]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  if [[ -z ${POSTGRES_PASSWORD:-} && ${POSTGRES_HOST_AUTH_METHOD:-} != trust ]]; then
    log "error: POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)"
    exit 1
  fi
  log "initdb (user $user, database $db)"
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a list of words, as upstream
  initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    ${POSTGRES_INITDB_ARGS:-} >/dev/null
  rm -f "$pwfile"
  printf 'host all all all %s\n' "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"

  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w -t 60 start >/dev/null
  psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$user" --no-password)
  if [[ $db != postgres ]]; then
    "${psql[@]}" --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db";'
  fi
  export PGUSER=$user PGDATABASE=$db
  for f in /docker-entrypoint-initdb.d/*; do
    case $f in
      *.sh)
        log "running $f"
        # shellcheck disable=SC1090  # the init scripts are the image user's
        if [[ -x $f ]]; then "$f"; else . "$f"; fi
        ;;
      *.sql)
        log "running $f"
        "${psql[@]}" --dbname "$db" -f "$f" >/dev/null
        ;;
      *) log "ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
  log "initialisation complete; starting the server"
fi

exec "$@"
