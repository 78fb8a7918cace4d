#!/usr/bin/env bash
# TEST STAND-IN base: a minimal Debian 12 (bookworm) root file system for `docker import`, made with
# debootstrap from this machine's own Debian mirror, because no image registry is reachable here.
# Every other stand-in image (tests/docker/*/Dockerfile) is built FROM it. Run by
# scripts/docker_engine.sh, as root:
#
#   tests/docker/base/rootfs.sh ROOTFS_DIR MIRROR_URL APT_SOURCES_DIR [DEB_CACHE_DIR]
#
# APT_SOURCES_DIR holds the machine's apt source files (*.sources, *.list), copied into the image so apt
# inside builds reaches the same mirror (main, -updates and -security).
set -euo pipefail

rootfs=${1:?rootfs directory}
mirror=${2:?Debian mirror URL}
sources=${3:?directory of apt source files}
debs=${4:-}

args=(--variant=minbase --components=main)
if [[ -n $debs ]]; then
  mkdir -p "$debs"
  args+=(--cache-dir="$debs")
fi
debootstrap "${args[@]}" bookworm "$rootfs" "$mirror" >&2

# The machine's sources replace debootstrap's one-line sources.list.
rm -f "$rootfs/etc/apt/sources.list"
cp "$sources"/* "$rootfs/etc/apt/sources.list.d/"
cat >"$rootfs/etc/apt/apt.conf.d/90quaint-standin" <<'APT'
// Image builds: no recommends, no caches left in layers, no prompts. A dated snapshot mirror has
// Release files past their Valid-Until date; signatures are still checked.
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Check-Valid-Until "false";
Dpkg::Options:: "--force-confold";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
# debootstrap leaves its downloads in the image when no cache dir was given.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
