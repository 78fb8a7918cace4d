# shellcheck shell=bash
# What `scripts/local_suite.sh up` checks before it starts anything (sourced by it, never run): the
# interpreter for the services (making the project's .venv on a fresh checkout), that the services
# import with it, and that the real Binance answers. The caller has sourced deploy_lib.sh and set
# QUAINT_ROOT.

# The interpreter that runs the services: QUAINT_PYTHON, else the project's .venv, which a fresh
# checkout gets made here (python3 -m venv + pip install -e .), as test.sh would.
python_bin() {
  if [[ -n ${QUAINT_PYTHON:-} ]]; then
    # Services and checks run from other directories: a relative path is made absolute.
    if [[ $QUAINT_PYTHON == */* && $QUAINT_PYTHON != /* ]]; then
      echo "$QUAINT_ROOT/$QUAINT_PYTHON"
    else
      echo "$QUAINT_PYTHON"
    fi
    return
  fi
  local venv=$QUAINT_ROOT/.venv py
  if [[ ! -x $venv/bin/python ]]; then
    py=$(command -v python3) || die "python3 not found (Debian/Ubuntu: apt-get install python3 python3-venv)"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "Python >= 3.11 is needed; $py is older"
    log "creating $venv (first run)"
    "$py" -m venv "$venv" >&2 || die "could not create $venv (Debian/Ubuntu: apt-get install python3-venv)"
  fi
  echo "$venv/bin/python"
}

# The modules (of MODULE...) that do not import with PYTHON, e.g. for a missing dependency. Importing a
# service's __main__ runs nothing: each starts only under `python -m`.
missing_modules() {
  (cd / && "$1" - "${@:2}") <<'PY'
import importlib
import sys

missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
print(" ".join(missing))
PY
}

# The services must import; in the project's own .venv, install the project when they do not.
check_python() {
  local py=$1 missing
  shift
  missing=$(missing_modules "$py" "$@" 2>/dev/null) || missing="$*"
  [[ -n $missing ]] || return 0
  if [[ -z ${QUAINT_PYTHON:-} ]]; then
    log "installing the project into .venv (pip install -e .)"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$py" -m pip install -q -e "$QUAINT_ROOT" >&2 ||
      die "pip install -e . failed"
    missing=$(missing_modules "$py" "$@") || missing="$*"
    [[ -n $missing ]] || return 0
  fi
  die "cannot import $missing with $py: install the project there (pip install -e .)"
}

# The real exchange must answer before anything starts; a clear error otherwise.
check_binance() {
  local py=$1
  log "checking Binance: $BINANCE_REST_URL and $BINANCE_WS_URL"
  "$py" - "$BINANCE_REST_URL" "$BINANCE_WS_URL" <<'PY' || die "Binance is unreachable from this machine; nothing was started. Check the network, a proxy, or BINANCE_REST_URL/BINANCE_WS_URL in .env; for offline use run ./deploy.sh --local --simulate (the bundled simulator, clearly labelled as simulated data)."
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

rest, ws = sys.argv[1].rstrip("/"), sys.argv[2]
try:
    with urllib.request.urlopen(rest + "/api/v3/ping", timeout=10) as response:
        response.read()
except (urllib.error.URLError, OSError, ValueError) as exc:
    print(f"[local] error: GET {rest}/api/v3/ping failed: {exc}", file=sys.stderr)
    sys.exit(1)
url = urllib.parse.urlsplit(ws)
port = url.port or (443 if url.scheme == "wss" else 80)
try:
    socket.create_connection((url.hostname or "", port), timeout=10).close()
except OSError as exc:
    print(f"[local] error: cannot connect to {url.hostname}:{port} ({ws}): {exc}", file=sys.stderr)
    sys.exit(1)
PY
}
