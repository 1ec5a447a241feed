#!/usr/bin/env bash
# Build the native core in place (src/stackful/_native.*.so) for every CPython 3.11-3.13 that
# pyenv has and for Debian sid's 3.14 and 3.15 (tools/sid-python.sh, fetched on first use), so
# `PYTHONPATH=src pythonX.Y -m pytest` works without installing.
set -euo pipefail
cd "$(dirname "$0")/.."
build() {  # build VERSION PYTHON [PYTHONPATH for setuptools]
    local v=$1 py=$2
    PYTHONPATH=${3:-} "$py" setup.py -q build_ext --inplace --build-temp "build/tmp-$v" \
        >/dev/null 2>&1 || PYTHONPATH=${3:-} "$py" setup.py -q build_ext --inplace --build-temp "build/tmp-$v"
    echo "built for $v"
}
for v in 3.11 3.12 3.13; do
    py=$(pyenv root 2>/dev/null)/versions/$(pyenv versions --bare 2>/dev/null | grep -E "^${v//./\\.}(\.|$)" | tail -n 1)/bin/python$v
    [ -x "$py" ] || { echo "skip $v (not in pyenv)"; continue; }
    "$py" -c "import setuptools" 2>/dev/null || "$py" -m pip install -q setuptools wheel
    build "$v" "$py"
done
for py in $(tools/sid-python.sh 3.14 3.15); do
    v=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    # Debian's interpreter is externally managed: setuptools comes from its own wheel.
    build "$v" "$py" "$(ls "$(dirname "$py")"/../share/python-wheels/setuptools-*.whl)"
done
