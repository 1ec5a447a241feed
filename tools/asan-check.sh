#!/usr/bin/env bash
# Build the native core with AddressSanitizer in a scratch copy of the tree and run
# the given tests against it (default: the core's).  Any ASan report fails.
#   tools/asan-check.sh [PYTHON] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}; shift || true
tests=("$@"); [ ${#tests[@]} -gt 0 ] || tests=(tests/test_fiber.py)
"$py" -c "import setuptools" 2>/dev/null || "$py" -m pip install -q setuptools wheel
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r setup.py pyproject.toml src tests "$scratch"/
rm -f "$scratch"/src/stackful/*.so
(cd "$scratch" && STACKFUL_SANITIZE=address "$py" setup.py -q build_ext --inplace \
    --build-temp build/asan >/dev/null 2>&1) || {
    echo "ASan build failed"; (cd "$scratch" && STACKFUL_SANITIZE=address "$py" setup.py build_ext --inplace); exit 1; }
[[ "$(nm -D "$scratch"/src/stackful/_native*.so)" == *__asan_init* ]] || { echo "not an ASan build"; exit 1; }
libasan=$(gcc -print-file-name=libasan.so)
# CPython itself is not instrumented and keeps memory until exit: no leak report.
# Python's allocator hides heap errors from ASan: use malloc directly.
(cd "$scratch" && LD_PRELOAD="$libasan" PYTHONMALLOC=malloc \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0:halt_on_error=1 \
    PYTHONPATH=src "$py" -m pytest -q -p no:cacheprovider "${tests[@]}")
