#!/usr/bin/env bash
# A newcomer's machine as an image: stock Debian SUITE (bookworm: Python 3.11; trixie: 3.13)
# from debootstrap's minbase, plus only `python3 git make` from apt, trusting this host's
# extra CA certificates as that machine would trust its own network's.
#   bash tests/newcomer/build.sh trixie     # -> nightshift-newcomer:trixie
# Each image is built once; delete it (docker rmi) to rebuild.
set -euo pipefail
suite=${1:?usage: build.sh SUITE}
cd "$(dirname "$0")"
have() { docker image inspect "$1" >/dev/null 2>&1; }
bash ../../compose/stand-ins/debian.sh "$suite"
rm -rf extra-ca && mkdir -p extra-ca
cp /usr/local/share/ca-certificates/*.crt extra-ca/ 2>/dev/null || true
have "nightshift-newcomer:$suite" || docker build -q --build-arg BASE="nightshift-stand-in/debian:$suite" \
    -t "nightshift-newcomer:$suite" . >/dev/null
echo "nightshift-newcomer:$suite"
