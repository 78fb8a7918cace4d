#!/usr/bin/env bash
# A separate virtual environment with pgAdmin 4 (about 600 MB), for the browser test and for running pgAdmin
# without Docker. Kept apart from .venv so pgAdmin's pinned dependencies never conflict with the project's.
#
#   scripts/pgadmin_env.sh            # create or update; prints the venv path as its last line
#   scripts/pgadmin_env.sh --path     # print the venv path only
#
# Environment: QUAINT_PGADMIN_VENV (default $QUAINT_CACHE_DIR/pgadmin-venv, QUAINT_CACHE_DIR defaulting to
# ~/.cache/quaint), QUAINT_PGADMIN_VERSION (default below; keep in step with pgadmin/Dockerfile).
set -euo pipefail

PGADMIN_VERSION=${QUAINT_PGADMIN_VERSION:-9.18}
CACHE_DIR=${QUAINT_CACHE_DIR:-$HOME/.cache/quaint}
VENV=$(realpath -m "${QUAINT_PGADMIN_VENV:-$CACHE_DIR/pgadmin-venv}")

log() { printf '[pgadmin_env] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ ${1:-} == --path ]]; then
  echo "$VENV"
  exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [--path]"

pick_python() {
  local py
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
      echo "$py"
      return
    fi
  done
  die "Python >= 3.9 not found"
}

# The stamp records what was installed; an interrupted install leaves no stamp and is redone.
stamp=$VENV/.quaint-pgadmin-version
if [[ -f $stamp && $(cat "$stamp") == "$PGADMIN_VERSION" && -x $VENV/bin/python ]]; then
  log "pgAdmin $PGADMIN_VERSION already installed in $VENV"
  echo "$VENV"
  exit 0
fi

py=$(pick_python)
if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV"
  mkdir -p "$(dirname "$VENV")"
  "$py" -m venv "$VENV" || die "could not create a venv (on Debian/Ubuntu: apt-get install python3-venv)"
fi
rm -f "$stamp"
log "installing pgadmin4==$PGADMIN_VERSION (about 600 MB; a minute or two)"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$VENV/bin/python" -m pip install -q "pgadmin4==$PGADMIN_VERSION"
"$VENV/bin/python" -c 'import pgadmin4' || die "pgadmin4 does not import after install"
echo "$PGADMIN_VERSION" >"$stamp"
log "pgAdmin $PGADMIN_VERSION ready in $VENV"
echo "$VENV"
