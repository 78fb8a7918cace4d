#!/usr/bin/env bash
# TEST STAND-IN for dpage/pgadmin4's /entrypoint.sh (the parts pgadmin/ relies on). Every start writes
# /pgadmin4/config_distro.py (server mode, data in /var/lib/pgadmin, listen on 0.0.0.0:80, then one line
# per PGADMIN_CONFIG_<NAME>=<python literal>); the first start (no pgadmin4.db yet) creates the login
# PGADMIN_DEFAULT_EMAIL / PGADMIN_DEFAULT_PASSWORD and imports PGADMIN_SERVER_JSON_FILE for it. Then it
# serves pgAdmin (its own pgAdmin4.py server; upstream runs gunicorn).
set -euo pipefail

: "${PGADMIN_DEFAULT_EMAIL:?PGADMIN_DEFAULT_EMAIL must be set}"
: "${PGADMIN_DEFAULT_PASSWORD:?PGADMIN_DEFAULT_PASSWORD must be set}"
python=/venv/bin/python3
# The app as pip installed it (pgadmin4 is a namespace package: no __file__ to ask).
pkg=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/pgadmin4
[[ -f $pkg/pgAdmin4.py ]] || { echo "pgAdmin not found at $pkg" >&2; exit 1; }
data=/var/lib/pgadmin

{
  echo "SERVER_MODE = True"
  echo "DATA_DIR = '$data'"
  echo "LOG_FILE = '/dev/null'"
  echo "DEFAULT_SERVER = '0.0.0.0'"
  echo "DEFAULT_SERVER_PORT = ${PGADMIN_LISTEN_PORT:-80}"
  echo "UPGRADE_CHECK_ENABLED = False"
  while IFS='=' read -r name value; do
    echo "${name#PGADMIN_CONFIG_} = $value"
  done < <(env | grep '^PGADMIN_CONFIG_' || true)
} >/pgadmin4/config_distro.py
export CONFIG_DISTRO_FILE_PATH=/pgadmin4/config_distro.py

if [[ ! -f $data/pgadmin4.db ]]; then
  PGADMIN_SETUP_EMAIL=$PGADMIN_DEFAULT_EMAIL PGADMIN_SETUP_PASSWORD=$PGADMIN_DEFAULT_PASSWORD \
    "$python" "$pkg/setup.py" setup-db
  if [[ -n ${PGADMIN_SERVER_JSON_FILE:-} && -f $PGADMIN_SERVER_JSON_FILE ]]; then
    "$python" "$pkg/setup.py" load-servers "$PGADMIN_SERVER_JSON_FILE" --user "$PGADMIN_DEFAULT_EMAIL"
  fi
fi

exec "$python" "$pkg/pgAdmin4.py"
