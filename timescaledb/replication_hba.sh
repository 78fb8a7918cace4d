#!/usr/bin/env bash
# Run once by the timescaledb image's entrypoint, when the primary's volume is first initialised (after
# initdb, before the real server starts): lets a streaming standby (the compose profile "replica",
# timescaledb/replica.sh) connect for replication as the database user with its password. The image's
# own "host all all all scram-sha-256" line does not cover the replication protocol. A volume made
# before this script existed needs the same line added by hand (README: Running on several machines).
set -euo pipefail
hba=${PGDATA:-/var/lib/postgresql/data}/pg_hba.conf
echo "host replication \"${POSTGRES_USER:-postgres}\" all scram-sha-256" >>"${hba}"
