#!/usr/bin/env bash
# P5 on a GPU machine with Python 3.12 and no network, from the repository root:
#   bash bench/gpu/fetch_wheels.sh       # here, with network: the wheels into .whl/
#   bash bench/gpu/run.sh                # there, with .whl/ beside the checkout
# Installs the carried wheels (no index, no dependencies) into a private folder, prints what
# the machine has, runs a small GPU + CPU smoke (ROWS_SMOKE rows) and then P5 at ROWS rows.
# Writes p5-smoke.json and p5.json to $OUT (default bench/out).
set -euo pipefail
cd "$(dirname "$0")/../.."
site=${SITE:-/tmp/nightshift-gpu-site}
out=${OUT:-bench/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl
export PYTHONPATH="$site:$PWD/include" PYTHONUNBUFFERED=1
nvidia-smi -L
echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"
python3 -c 'import sys, pandas, pyarrow, sklearn, xgboost, dask_cuda
print(sys.version.split()[0], "pandas", pandas.__version__, "pyarrow", pyarrow.__version__,
      "sklearn", sklearn.__version__, "xgboost", xgboost.__version__,
      "dask-cuda", dask_cuda.__version__)'
python3 bench/gpu/p5.py --rows "${ROWS_SMOKE:-200000}" --days 2 --rounds 20 \
    --out "$out/p5-smoke.json" 2>&1 | grep -v train-logloss
python3 bench/gpu/p5.py --rows "${ROWS:-10000000}" --out "$out/p5.json" 2>&1 | grep -v train-logloss
