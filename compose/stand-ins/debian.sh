#!/usr/bin/env bash
# Build nightshift-stand-in/debian:SUITE (debootstrap's minbase, imported) unless it exists:
# Docker Hub's debian image, from Debian's own mirror. Used by build.sh (bookworm) and by
# tests/newcomer/build.sh (a newcomer's stock Debian, bookworm or trixie).
set -euo pipefail
suite=${1:?usage: debian.sh SUITE}
image="nightshift-stand-in/debian:$suite"
docker image inspect "$image" >/dev/null 2>&1 && exit 0
command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase "$suite" "$rootfs" http://deb.debian.org/debian >/dev/null
tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
