#!/usr/bin/env bash
# Build local stand-ins for the images docker-compose.yaml pulls from Docker Hub, for machines
# that cannot reach it (the registries of Debian and PyPI are enough):
#   nightshift-stand-in/debian:bookworm   debootstrap's minbase, imported
#   nightshift-stand-in/python:3.11       Debian's python3 (3.11), trusting this host's CAs
#   nightshift-stand-in/postgres:15       Debian's PostgreSQL 15, the official image's env contract
#   nightshift-stand-in/s3:moto           moto's S3 server, started with MinIO's arguments
# Then: docker-compose -f docker-compose.yaml -f compose/stand-ins/override.yaml ...
# Each image is built once (the S3 stand-in every time, cached); delete one (docker rmi) to
# rebuild it.
set -euo pipefail
cd "$(dirname "$0")"
have() { docker image inspect "$1" >/dev/null 2>&1; }

bash debian.sh bookworm
# The images trust the CAs this host trusts beyond Debian's (a proxy's, a company's):
# without them pip, uv and apt inside a build fail with CERTIFICATE_VERIFY_FAILED.
rm -rf python/extra-ca && mkdir -p python/extra-ca
cp /usr/local/share/ca-certificates/*.crt python/extra-ca/ 2>/dev/null || true
have nightshift-stand-in/python:3.11 || docker build -q -t nightshift-stand-in/python:3.11 python
have nightshift-stand-in/postgres:15 || docker build -q -t nightshift-stand-in/postgres:15 postgres
moto=$(grep -A1 '^name = "moto"' ../../uv.lock | sed -n 's/^version = "\(.*\)"/\1/p')
# Built every time (from Docker's layer cache when nothing changed): its start script follows
# MinIO's command line, which docker-compose.yaml changes with the project.
docker build -q --build-arg MOTO="$moto" -t nightshift-stand-in/s3:moto s3
docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep nightshift-stand-in
