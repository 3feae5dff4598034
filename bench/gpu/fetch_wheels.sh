#!/usr/bin/env bash
# Download the wheels of bench/gpu/wheels.txt into .whl/ (ignored by git) for a GPU machine
# with Python 3.12 and no network, and print their total size: the wheels and the working
# tree travel together to such a machine, within 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir .whl
grep -v '^#' bench/gpu/wheels.txt | xargs python3 -m pip download --quiet --no-deps \
    --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl
wheels=$(du -cb .whl/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1)
lock=$(stat -c %s uv.lock)
awk -v w="$wheels" -v t="$tree" -v l="$lock" 'BEGIN {
    printf "wheels %.2f MiB + working tree %.2f MiB = %.2f MiB (at most 64 MiB travel)\n",
        w / 1048576, t / 1048576, (w + t) / 1048576
    if (w + t > 64 * 1048576)
        printf "over: the GPU run does not read uv.lock (%.2f MiB); without it %.2f MiB\n",
            l / 1048576, (w + t - l) / 1048576 }'
ls .whl | wc -l | xargs printf '%s wheels in .whl/\n'
