#!/usr/bin/env bash
# TEST STAND-IN for the upstream image's 000_install_timescaledb.sh: telemetry setting, and the extension
# in template1 and POSTGRES_DB. Runs once, as postgres, against the socket-only initialisation server.
set -euo pipefail
if [[ ${TIMESCALEDB_TELEMETRY:-} == off ]]; then
  echo "timescaledb.telemetry_level = off" >>"$PGDATA/postgresql.conf"
fi
for db in template1 "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}"; do
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "$db" \
    -c "CREATE EXTENSION IF NOT EXISTS timescaledb"
done
