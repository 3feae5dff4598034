#!/usr/bin/env bash
# By hand: the README's two commands on stock Debian SUITE (bookworm: Python 3.11, trixie:
# 3.13) with only `python3 git make` from apt, on this checkout's files; prints the times.
#   bash tests/newcomer/run.sh trixie
set -euo pipefail
cd "$(dirname "$0")/../.."
image=$(bash tests/newcomer/build.sh "${1:?usage: run.sh SUITE}")
git ls-files -z --cached --others --exclude-standard | tar --null -T - -c \
    | docker run --rm -i "$image" bash -c "$(cat tests/newcomer/steps.sh)" steps all
