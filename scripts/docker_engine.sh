#!/usr/bin/env bash
# A private Docker engine and the locally built images the compose stack needs, for the end-to-end test
# (tests/test_compose_stack.py) and for trying the stack on a machine without an image registry.
#
#   scripts/docker_engine.sh install            Debian's engine: docker.io containerd runc iptables debootstrap
#   scripts/docker_engine.sh start --dir DIR    a private dockerd (data root, exec root, socket, log in DIR);
#                                               prints unix://DIR/docker.sock as its last line
#   scripts/docker_engine.sh stop --dir DIR [--purge]   stop it (by its pid); --purge deletes DIR too
#   scripts/docker_engine.sh images             into the engine at DOCKER_HOST: the debootstrap base and the
#                                               TEST STAND-INS tagged with the upstream names compose uses
#
# The private engine never touches a system one: its own data root, exec root, socket and config, its own
# containerd, no default bridge, and no iptables rules or forwarding on this machine (containers reach
# one another and the published ports; image builds that need the network use the host's).
#
# Stand-ins: no registry is reachable where the tests run, so every image is built here (recipes in
# tests/docker/). Each is cached as a `docker save` tarball in QUAINT_CACHE_DIR/docker-images (default
# ~/.cache/quaint), keyed by a hash of its recipe (and its parent's key), so another clone or run dir on
# this machine loads it instead of building it; a changed recipe rebuilds that image and its children.
# The upstream images stay the ones docker-compose.yml and the Dockerfiles name for users.
#
# Environment: QUAINT_CACHE_DIR, QUAINT_DEBIAN_MIRROR (else read from the apt configuration),
# QUAINT_DOCKER_CLI (default /usr/bin/docker, the CLI matching Debian's engine), QUAINT_PYTHON (the Python
# whose pip fetches the pgAdmin wheels; default .venv/bin/python), DOCKER_HOST (for `images`).
set -euo pipefail

QUAINT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=docker_engine
# shellcheck source=scripts/deploy_lib.sh
source "$QUAINT_ROOT/scripts/deploy_lib.sh"

CACHE_DIR=${QUAINT_CACHE_DIR:-$HOME/.cache/quaint}
IMAGE_CACHE=$CACHE_DIR/docker-images
RECIPES=$QUAINT_ROOT/tests/docker
DOCKER_CLI=${QUAINT_DOCKER_CLI:-/usr/bin/docker}
PACKAGES=(docker.io containerd runc iptables debootstrap)
BASE_TAG=quaint-standin/debian:bookworm
PYTHON_STANDIN=quaint-standin/python:3.11-bookworm
STANDIN_LABEL="io.quaint.stand-in"
RECIPE_LABEL="io.quaint.recipe"
MARKER=.quaint-docker-engine

as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -- "$@"
  else
    die "need root (or passwordless sudo) to run: $*"
  fi
}

pkg_installed() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'; }

cmd_install() {
  [[ $# -eq 0 ]] || die "install takes no arguments"
  command -v dpkg-query >/dev/null 2>&1 || die "install supports Debian/Ubuntu only"
  local missing=() p
  for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "Docker engine packages present"
    return 0
  fi
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
    --no-install-recommends "${missing[@]}" >&2
}

# ---- the private engine ----

DIR=""
PURGE=0
parse_dir() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      --dir) DIR=${2:?--dir needs a value}; shift 2 ;;
      --purge) PURGE=1; shift ;;
      *) die "unknown argument: $1" ;;
    esac
  done
  [[ -n $DIR ]] || die "--dir DIR is required"
  DIR=$(realpath -m "$DIR")
}

socket_of() { echo "$DIR/docker.sock"; }

# Pid of this DIR's dockerd, or nothing (exit 1): the pid file's process must be a dockerd using DIR.
engine_pid() {
  local pid cmdline
  [[ -f $DIR/dockerd.pid ]] || return 1
  pid=$(<"$DIR/dockerd.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *dockerd*"--data-root $DIR/root "* ]] || return 1
  echo "$pid"
}

# True while PID exists and is not a zombie. dockerd is started detached, so when it exits its parent
# is whatever reaps orphans; where PID 1 does not (a container's init that never waits), the exited
# engine stays a zombie and `kill -0` would call it alive forever.
process_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

engine_answers() { DOCKER_HOST=unix://$(socket_of) "$DOCKER_CLI" version >/dev/null 2>&1; }

cmd_start() {
  parse_dir "$@"
  [[ $EUID -eq 0 ]] || die "dockerd needs root"
  command -v dockerd >/dev/null 2>&1 || die "dockerd not found: run scripts/docker_engine.sh install"
  [[ -x $DOCKER_CLI ]] || die "$DOCKER_CLI not found: run scripts/docker_engine.sh install"
  # containerd's socket lives under the exec root: unix socket paths are limited to 107 bytes.
  [[ ${#DIR} -le 60 ]] || die "--dir $DIR is too long for the engine's sockets (60 characters at most)"
  if engine_pid >/dev/null && engine_answers; then
    echo "unix://$(socket_of)"
    return 0
  fi
  mkdir -p "$DIR"
  touch "$DIR/$MARKER"
  # Its own (empty) daemon.json, so /etc/docker/daemon.json of a system engine never applies.
  echo '{}' >"$DIR/daemon.json"
  setsid dockerd --config-file "$DIR/daemon.json" --data-root "$DIR/root" --exec-root "$DIR/exec" \
    --pidfile "$DIR/dockerd.pid" -H "unix://$(socket_of)" \
    --bridge none --iptables=false --ip-forward=false --ip-masq=false \
    </dev/null >>"$DIR/dockerd.log" 2>&1 &
  local child=$! deadline=$((SECONDS + 60))
  until engine_answers; do
    if ! process_alive "$child"; then
      tail -n 30 "$DIR/dockerd.log" >&2
      die "dockerd exited during start-up (log: $DIR/dockerd.log)"
    fi
    ((SECONDS < deadline)) || die "dockerd did not answer within 60 s (log: $DIR/dockerd.log)"
    sleep 0.2
  done
  log "dockerd running (pid $child, data root $DIR/root, log $DIR/dockerd.log)"
  echo "unix://$(socket_of)"
}

# Every step of stop is bounded, and its log lines carry the seconds since stop began, so a caller's
# timeout (the compose test gives it 600 s) always sees how far it got.
STOP_T0=$SECONDS
slog() { log "+$((SECONDS - STOP_T0)) s: $*"; }
engine_cli() { DOCKER_HOST=unix://$(socket_of) timeout "$1" "$DOCKER_CLI" "${@:2}"; }

cmd_stop() {
  parse_dir "$@"
  local pid deadline
  if pid=$(engine_pid); then
    # Containers first, then the networks: dockerd leaves a user-defined network's bridge interface on
    # the machine when it exits. Everything here belongs to this engine alone.
    if engine_answers; then
      local ids net
      ids=$(engine_cli 30 ps -q) || ids=""
      # shellcheck disable=SC2086  # one id per word
      [[ -z $ids ]] || engine_cli 60 stop -t 10 $ids >/dev/null || warn "docker stop failed or timed out"
      for net in $(engine_cli 30 network ls -q --filter type=custom || true); do
        engine_cli 30 network rm "$net" >/dev/null || true
      done
    fi
    slog "stopping dockerd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 60))
    local killed=0
    while process_alive "$pid"; do
      if ((SECONDS >= deadline)); then
        if ((killed)); then
          warn "dockerd (pid $pid) still runs 10 s after SIGKILL; leaving it"
          break
        fi
        warn "dockerd did not stop within 60 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        killed=1
        deadline=$((SECONDS + 10))
      fi
      sleep 0.2
    done
    slog "dockerd stopped"
  fi
  # Shims of containers that outlived a killed engine: only this engine's (its socket in their command
  # line). Found by /proc/*/comm first: reading every process's command line can block on a process
  # stuck in the kernel, and a stop must not hang.
  local comm pid_dir shim
  for comm in /proc/[0-9]*/comm; do
    [[ $(cat "$comm" 2>/dev/null) == containerd-shim* ]] || continue
    pid_dir=${comm%/comm}
    shim=${pid_dir#/proc/}
    [[ $(tr '\0' ' ' 2>/dev/null <"$pid_dir/cmdline") == *"-address $DIR/exec/containerd/containerd.sock"* ]] &&
      kill -KILL "$shim" 2>/dev/null
  done
  # Mounts left under DIR (overlay layers, netns) would make the directory impossible to delete.
  local mnt
  while read -r mnt; do
    if [[ -n $mnt ]]; then timeout 30 umount -l "$mnt" 2>/dev/null || true; fi
  done < <(findmnt -rn -o TARGET | awk -v d="$DIR/" 'index($0, d) == 1' | sort -r)
  if [[ $PURGE -eq 1 && -d $DIR ]]; then
    [[ -f $DIR/$MARKER ]] || die "$DIR has no $MARKER marker; not deleting it"
    # Gigabytes of image layers: DIR is gone at once (renamed aside) and its files are deleted by a
    # detached process, so no caller waits on a slow disk.
    local trash
    trash=$(mktemp -d "$(dirname "$DIR")/.quaint-docker-trash.XXXXXX")
    mv -- "$DIR" "$trash/"
    setsid rm -rf -- "$trash" </dev/null >/dev/null 2>&1 &
    slog "deleted $DIR (its files go in the background: $trash)"
  fi
}

# ---- images ----

docker_() { "$DOCKER_CLI" "$@"; }

# sha256 of FILES/DIRS (paths relative to the recipes) and extra words: the cache key of one image.
recipe_key() {
  local parts=() f
  while [[ $# -gt 0 && $1 != -- ]]; do parts+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  {
    for f in "${parts[@]}"; do
      (cd "$RECIPES" && find "$f" -type f -print0 | sort -z | xargs -0 sha256sum)
    done
    printf '%s\n' "$@"
  } | sha256sum | cut -c1-16
}

# The image TAG carries the recipe KEY: present and current.
image_current() {
  [[ $(docker_ image inspect -f "{{ index .Config.Labels \"$RECIPE_LABEL\" }}" "$1" 2>/dev/null) == "$2" ]]
}

# Make TAG current in the engine: already there, loaded from the cache, or built by BUILD (a function
# taking the tag and key) and then saved to the cache. Older tarballs of the same image are removed.
ensure_image() {
  local name=$1 tag=$2 key=$3 build=$4 t0=$SECONDS
  local tarball=$IMAGE_CACHE/$name-$key.tar
  if image_current "$tag" "$key"; then
    log "$tag: present ($name $key)"
    return 0
  fi
  if [[ -f $tarball ]]; then
    docker_ load -q -i "$tarball" >/dev/null || die "docker load $tarball failed"
    image_current "$tag" "$key" || die "$tarball did not hold $tag with key $key"
    log "$tag: loaded from $tarball ($((SECONDS - t0)) s)"
    return 0
  fi
  log "$tag: building ($name $key; log $IMAGE_CACHE/$name.log)"
  "$build" "$tag" "$key" >"$IMAGE_CACHE/$name.log" 2>&1 || {
    tail -n 40 "$IMAGE_CACHE/$name.log" >&2
    die "building $tag failed (log: $IMAGE_CACHE/$name.log)"
  }
  image_current "$tag" "$key" || die "the build of $tag did not label it with $key"
  docker_ save -o "$tarball.tmp" "$tag" && mv -f "$tarball.tmp" "$tarball"
  find "$IMAGE_CACHE" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$key.tar" -delete
  log "$tag: built and cached in $((SECONDS - t0)) s"
}

debian_mirror() {
  if [[ -n ${QUAINT_DEBIAN_MIRROR:-} ]]; then echo "$QUAINT_DEBIAN_MIRROR"; return; fi
  local m=""
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [[ -z $m && -f /etc/apt/sources.list ]]; then
    m=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' \
      /etc/apt/sources.list)
  fi
  [[ -n $m ]] || die "no Debian mirror in the apt configuration; set QUAINT_DEBIAN_MIRROR"
  echo "$m"
}

# The machine's Debian apt sources (main, -updates, -security), copied into the base image.
collect_apt_sources() {
  local out=$1 f
  mkdir -p "$out"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] && grep -q debian "$f" && cp "$f" "$out/"
  done
  [[ -n $(ls -A "$out") ]] || die "no Debian apt sources found under /etc/apt"
}

build_base() {
  local tag=$1 key=$2 work
  work=$(mktemp -d "$IMAGE_CACHE/base.XXXXXX")
  collect_apt_sources "$work/sources"
  "$RECIPES/base/rootfs.sh" "$work/rootfs" "$(debian_mirror)" "$work/sources" "$IMAGE_CACHE/debootstrap-debs"
  tar -C "$work/rootfs" -c . | docker_ import -c 'ENV LANG=C.UTF-8' -c 'CMD ["bash"]' \
    -c "LABEL $STANDIN_LABEL=\"Debian 12 minbase made by debootstrap (test base, not an upstream image)\"" \
    -c "LABEL $RECIPE_LABEL=$key" - "$tag"
  rm -rf "$work"
}

build_dir() {
  local dir=$1 tag=$2 key=$3 what=$4
  shift 4
  DOCKER_BUILDKIT=1 docker_ build --network host --progress plain \
    --label "$STANDIN_LABEL=$what" --label "$RECIPE_LABEL=$key" "$@" -t "$tag" "$dir"
}

build_python() {
  build_dir "$RECIPES/python" "$1" "$2" "TEST STAND-IN for python:3.11-slim-bookworm (Debian's python3)"
}

timescaledb_stage() {
  local d stage=""
  for d in "$CACHE_DIR"/timescaledb-*-pg15; do
    [[ -f $d/complete ]] && stage=$d
  done
  [[ -n $stage ]] || die "no TimescaleDB build in $CACHE_DIR (run scripts/pg_cluster.sh install, which makes it)"
  echo "$stage"
}

build_timescaledb() {
  local tag=$1 key=$2 ctx
  ctx=$(mktemp -d "$IMAGE_CACHE/timescaledb.XXXXXX")
  cp -a "$RECIPES/timescaledb/." "$ctx/"
  tar -C "$(timescaledb_stage)/root" -cf "$ctx/timescaledb-apache.tar" .
  build_dir "$ctx" "$tag" "$key" "TEST STAND-IN for $tag (Debian PostgreSQL 15 + TimescaleDB Apache build)"
  rm -rf "$ctx"
}

build_prometheus() {
  build_dir "$RECIPES/prometheus" "$1" "$2" "TEST STAND-IN for $1 (Debian's prometheus package)"
}

# pgAdmin's wheels, fetched once by this machine's pip (its download cache helps) and kept in the cache.
pgadmin_wheels() {
  local version=$1 dir py
  dir=$IMAGE_CACHE/wheels/pgadmin4-$version
  if [[ ! -f $dir/complete ]]; then
    py=${QUAINT_PYTHON:-$QUAINT_ROOT/.venv/bin/python}
    [[ -x $py ]] || py=$(command -v python3)
    rm -rf "$dir"
    mkdir -p "$dir"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$py" -m pip wheel -q --wheel-dir "$dir" \
      "pgadmin4==$version" >&2 || die "pip wheel pgadmin4==$version failed"
    touch "$dir/complete"
  fi
  echo "$dir"
}

build_pgadmin() {
  local tag=$1 key=$2 version=${1##*:} ctx wheels
  wheels=$(pgadmin_wheels "$version")
  ctx=$(mktemp -d "$IMAGE_CACHE/pgadmin.XXXXXX")
  cp -a "$RECIPES/pgadmin/." "$ctx/"
  cp -al "$wheels" "$ctx/wheels" 2>/dev/null || cp -a "$wheels" "$ctx/wheels"
  rm -f "$ctx/wheels/complete"
  build_dir "$ctx" "$tag" "$key" "TEST STAND-IN for $tag (pgAdmin 4 from PyPI)" \
    --build-arg "PYTHON_STANDIN=$PYTHON_STANDIN" --build-arg "PGADMIN_VERSION=$version"
  rm -rf "$ctx"
}

# The image names users get, read from the files that name them (so the stand-ins follow a version bump).
compose_image() {
  awk -v svc="  $1:" '$0 == svc {f = 1; next} f && /^  [a-z]/ {f = 0} f && $1 == "image:" {print $2; exit}' \
    "$QUAINT_ROOT/docker-compose.yml"
}
python_image() { awk -F= '/^ARG PYTHON_IMAGE=/ {print $2; exit}' "$QUAINT_ROOT/Dockerfile"; }
pgadmin_image() { awk '/^FROM dpage\/pgadmin4:/ {print $2; exit}' "$QUAINT_ROOT/pgadmin/Dockerfile"; }

# The upstream python tag = the cached stand-in plus this machine's CA trust, rebuilt on every call (a
# second, cheap), since the trust store can change between boots while the recipe does not.
tag_python_with_trust() {
  local tag=$1 ctx
  ctx=$(mktemp -d)
  cp "$RECIPES/python/trust.Dockerfile" "$ctx/Dockerfile"
  cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$ctx/pip.conf"
  DOCKER_BUILDKIT=1 docker_ build -q --build-arg "STANDIN=$PYTHON_STANDIN" \
    --label "$STANDIN_LABEL=TEST STAND-IN for $tag (Debian's python3 and this machine's CA trust)" \
    -t "$tag" "$ctx" >/dev/null || die "tagging $tag failed"
  rm -rf "$ctx"
  log "$tag: the Python stand-in with this machine's CA trust"
}

cmd_images() {
  [[ $# -eq 0 ]] || die "images takes no arguments"
  [[ -n ${DOCKER_HOST:-} ]] || die "DOCKER_HOST is not set: point it at the engine (scripts/docker_engine.sh start prints it)"
  [[ $EUID -eq 0 ]] || die "debootstrap needs root"
  docker_ version >/dev/null 2>&1 || die "no Docker engine answers at $DOCKER_HOST"
  mkdir -p "$IMAGE_CACHE"
  # One builder at a time per cache (two test runs on one machine share it).
  exec {lock}>"$IMAGE_CACHE/.lock"
  flock "$lock"
  local t0=$SECONDS base_key python_key tsdb_tag prom_tag pga_tag python_tag
  tsdb_tag=$(compose_image timescaledb)
  prom_tag=$(compose_image prometheus)
  pga_tag=$(pgadmin_image)
  python_tag=$(python_image)
  [[ -n $tsdb_tag && -n $prom_tag && -n $pga_tag && -n $python_tag ]] || die "could not read the image names"

  base_key=$(recipe_key base -- "$(debian_mirror)" "$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null)")
  ensure_image base "$BASE_TAG" "$base_key" build_base
  python_key=$(recipe_key python -- "$base_key")
  ensure_image python "$PYTHON_STANDIN" "$python_key" build_python
  tag_python_with_trust "$python_tag"
  local stage_sum
  stage_sum=$(cd "$(timescaledb_stage)/root" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)
  ensure_image timescaledb "$tsdb_tag" "$(recipe_key timescaledb -- "$base_key" "$tsdb_tag" "$stage_sum")" \
    build_timescaledb
  ensure_image prometheus "$prom_tag" "$(recipe_key prometheus -- "$base_key" "$prom_tag")" build_prometheus
  ensure_image pgadmin "$pga_tag" "$(recipe_key pgadmin -- "$python_key" "$pga_tag")" build_pgadmin
  log "images ready in $((SECONDS - t0)) s: $python_tag $tsdb_tag $prom_tag $pga_tag (TEST STAND-INS)"
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    install) cmd_install "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    images) cmd_images "$@" ;;
    -h | --help) usage ;;
    *) usage 2 ;;
  esac
}

main "$@"
