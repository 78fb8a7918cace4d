#!/usr/bin/env bash
# Entrypoint of the compose service timescaledb-replica (profile "replica"): a hot standby of the
# timescaledb service. On an empty volume it takes a base backup of the primary (pg_basebackup -R: the
# standby.signal and primary_conninfo that make it stream from there), retrying until the primary
# accepts; then it runs the image's own entrypoint, which sees an initialised data directory and starts
# PostgreSQL as a read-only standby. Promotion is never automatic (README: Running on several machines).
set -euo pipefail
PGDATA=${PGDATA:-/var/lib/postgresql/data}
PRIMARY_HOST=${REPLICA_PRIMARY_HOST:-timescaledb}
# Run a command as the postgres user: su-exec (the Alpine image), gosu, or util-linux's runuser (a
# Debian-based build, such as the test stand-in).
as_postgres() {
  if command -v su-exec >/dev/null 2>&1; then
    su-exec postgres "$@"
  elif command -v gosu >/dev/null 2>&1; then
    gosu postgres "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  else
    echo "replica: none of su-exec, gosu or runuser in this image to run pg_basebackup as postgres" >&2
    exit 1
  fi
}
if [[ ! -s ${PGDATA}/PG_VERSION ]]; then
  mkdir -p "${PGDATA}"
  chown postgres:postgres "${PGDATA}"
  chmod 0700 "${PGDATA}"
  until PGPASSWORD=${POSTGRES_PASSWORD} as_postgres pg_basebackup -h "${PRIMARY_HOST}" -p 5432 \
    -U "${POSTGRES_USER}" -D "${PGDATA}" -R -X stream -c fast; do
    echo "replica: base backup from ${PRIMARY_HOST} failed; retrying in 5 s" >&2
    find "${PGDATA}" -mindepth 1 -delete
    sleep 5
  done
fi
exec docker-entrypoint.sh postgres
