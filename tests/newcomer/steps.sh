# What a newcomer types, inside the container, in a copy of the checkout read from stdin (tar).
# $1: "demo" (make demo) or "all" (make demo, then make test-fast).
set -euo pipefail
mkdir -p /home/newcomer/nightshift && cd /home/newcomer/nightshift && tar -x
python3 --version
python3 -m pip --version 2>&1 | head -1 || true
started=$(date +%s); make demo; echo "DEMO_SECONDS=$(( $(date +%s) - started ))"
du -sh .venv | sed 's/^/VENV_AFTER_DEMO=/'
if [[ "${1:-demo}" == all ]]; then
    started=$(date +%s); make test-fast; echo "TEST_FAST_SECONDS=$(( $(date +%s) - started ))"
fi
