#!/usr/bin/env bash
# Build the native core in place (src/stackful/_native.*.so) for every CPython 3.11-3.13 that
# pyenv has, so `PYTHONPATH=src pythonX.Y -m pytest` works without installing.
set -euo pipefail
cd "$(dirname "$0")/.."
for v in 3.11 3.12 3.13; do
    py=$(pyenv root 2>/dev/null)/versions/$(pyenv versions --bare 2>/dev/null | grep -E "^${v//./\\.}(\.|$)" | tail -n 1)/bin/python$v
    [ -x "$py" ] || { echo "skip $v (not in pyenv)"; continue; }
    "$py" -c "import setuptools" 2>/dev/null || "$py" -m pip install -q setuptools wheel
    "$py" setup.py -q build_ext --inplace --build-temp "build/tmp-$v" >/dev/null 2>&1 \
        || "$py" setup.py -q build_ext --inplace --build-temp "build/tmp-$v"
    echo "built for $v"
done
