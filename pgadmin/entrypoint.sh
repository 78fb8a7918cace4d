#!/usr/bin/env bash
# Quaint2's pgAdmin start-up, run before the image's own entrypoint (given as arguments, default
# /entrypoint.sh). From the environment it
#   1. renders the pre-configured server list (servers.json template) for DB_HOST/DB_PORT/DB_USER/DB_NAME,
#      which pgAdmin imports on its first start (PGADMIN_SERVER_JSON_FILE);
#   2. writes the login's pgpass file (mode 600) with DB_PASSWORD into the user's storage directory, on
#      every start, so the server opens without a password prompt and a changed password takes effect.
# No password is ever stored in the repository or printed.
#
# Environment: DB_PASSWORD and PGADMIN_DEFAULT_EMAIL (required); DB_HOST (timescaledb), DB_PORT (5432),
# DB_USER (postgres), DB_NAME (btc_ml_production); PGADMIN_STORAGE_DIR (/var/lib/pgadmin/storage),
# PGADMIN_SERVER_JSON_FILE (/var/lib/pgadmin/quaint-servers.json), QUAINT_SERVERS_TEMPLATE
# (/pgadmin4/quaint-servers.json), PGADMIN_PYTHON (/venv/bin/python3, else python3).
set -euo pipefail

log() { printf '[quaint-pgadmin] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

: "${DB_PASSWORD:?DB_PASSWORD must be set (the database password pgAdmin logs in with)}"
: "${PGADMIN_DEFAULT_EMAIL:?PGADMIN_DEFAULT_EMAIL must be set (the pgAdmin login)}"
db_host=${DB_HOST:-timescaledb}
db_port=${DB_PORT:-5432}
db_user=${DB_USER:-postgres}
db_name=${DB_NAME:-btc_ml_production}
storage_root=${PGADMIN_STORAGE_DIR:-/var/lib/pgadmin/storage}
servers_out=${PGADMIN_SERVER_JSON_FILE:-/var/lib/pgadmin/quaint-servers.json}
template=${QUAINT_SERVERS_TEMPLATE:-/pgadmin4/quaint-servers.json}
[[ $db_port =~ ^[0-9]+$ ]] || die "DB_PORT must be a number"

python=${PGADMIN_PYTHON:-/venv/bin/python3}
[[ -x $python ]] || python=$(command -v python3) || die "python3 not found"

# 1. The server list: the template with this deployment's connection settings.
if [[ -f $template ]]; then
  mkdir -p "$(dirname "$servers_out")"
  "$python" - "$template" "$servers_out" "$db_host" "$db_port" "$db_user" "$db_name" <<'PY'
import json
import sys

template, out, host, port, user, name = sys.argv[1:]
with open(template, encoding="utf-8") as f:
    data = json.load(f)
for server in data["Servers"].values():
    server.update(Host=host, Port=int(port), Username=user, MaintenanceDB=name, DBRestriction=name)
with open(out, "w", encoding="utf-8") as f:
    json.dump(data, f, indent=4)
PY
  log "server list for $db_user@$db_host:$db_port/$db_name written to $servers_out"
else
  log "no server template at $template; the server list is left as it is"
fi

# 2. The pgpass file. pgAdmin (server mode) resolves the server's passfile "/.pgpass" inside the login's
# storage directory, named like pgAdmin's own preprocess_username(): '@' -> '_', '/' and '\' -> 'slash',
# 'pga_user_' before a leading digit.
user_dir=${PGADMIN_DEFAULT_EMAIL//@/_}
user_dir=${user_dir//\//slash}
user_dir=${user_dir//\\/slash}
[[ $user_dir =~ ^[0-9] ]] && user_dir=pga_user_$user_dir
# pgpass fields escape ':' and '\' with a backslash.
pgpass_escape() { local v=${1//\\/\\\\}; printf '%s' "${v//:/\\:}"; }
dir=$storage_root/$user_dir
mkdir -p "$dir"
chmod 700 "$dir"
(
  umask 077
  printf '%s:%s:*:%s:%s\n' "$(pgpass_escape "$db_host")" "$db_port" "$(pgpass_escape "$db_user")" \
    "$(pgpass_escape "$DB_PASSWORD")" >"$dir/.pgpass.tmp"
)
mv -f "$dir/.pgpass.tmp" "$dir/.pgpass"
log "pgpass for $db_user@$db_host:$db_port written to $dir/.pgpass"

export PGADMIN_SERVER_JSON_FILE=$servers_out
if [[ $# -eq 0 ]]; then
  set -- /entrypoint.sh
fi
exec "$@"
