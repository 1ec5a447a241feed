#!/usr/bin/env bash
# The whole extension and its test suite on a real arm64 CPython 3.11 (Debian 12's), run by
# qemu-user on an x86-64 machine:
#   - a private apt configuration (its own source list, package lists and cache; nothing installed,
#     no `dpkg --add-architecture`) fetches Debian 12's arm64 interpreter, its standard library, its
#     headers and the shared libraries the standard library loads; `dpkg -x` unpacks them into one
#     sysroot;
#   - a wrapper in the sysroot's bin directory runs that python under `qemu-aarch64 -L sysroot`.
#     `-0` hands the guest the wrapper's path as argv[0], so sys.executable is the wrapper, the
#     prefix is found next to it, and every child `sys.executable -m ...` starts the same emulated
#     interpreter (no binfmt_misc registration needed).  The wrapper exports STACKFUL_QEMU=aarch64:
#     the tests that cannot run under an emulator skip on it, with a reason;
#   - the extension is built by setup.py run by that arm64 python (so it picks the aarch64
#     switch by name, as on a real arm64 machine), with aarch64-linux-gnu-gcc as its compiler;
#   - pytest and the test dependencies come from PyPI as arm64 wheels (host pip, --platform),
#     installed into the sysroot's site directory (pip --target), never into a host interpreter.
#
#   tools/arm64-python.sh setup              sysroot + test dependencies; prints the wrapper's path
#   tools/arm64-python.sh build              setup, then build src/stackful/_native.*-aarch64-*.so
#   tools/arm64-python.sh test [PYTEST ARGS] build, then run pytest under qemu (default: tests/)
#
# Needs qemu-user, gcc-aarch64-linux-gnu and a host python with pip ($STACKFUL_HOST_PYTHON, else
# python3).  Idempotent: a complete sysroot and dependency directory are reused without the
# network.  The cache lives outside the work tree: $STACKFUL_ARM64_CACHE, else
# ${XDG_CACHE_HOME:-~/.cache}/stackful/arm64-python; delete it to fetch everything again.
set -euo pipefail
cd "$(dirname "$0")/.."

v=3.11
suite=bookworm
triplet=aarch64-linux-gnu
cache=${STACKFUL_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stackful/arm64-python}
root=$cache/root
wrapper=$root/usr/bin/python$v-qemu
# A site directory of the sysroot's interpreter: seen whatever PYTHONPATH a test gives a child.
deps=$root/usr/local/lib/python$v/dist-packages

# The interpreter and what it and its standard library's extension modules link (Debian 12 names).
packages=(python$v-minimal libpython$v-minimal libpython$v-stdlib libpython$v-dev
          libc6 libgcc-s1 libcrypt1 libssl3 libffi8 zlib1g libexpat1 libbz2-1.0 liblzma5
          libsqlite3-0 libuuid1 media-types libncursesw6 libtinfo6 libreadline8 libdb5.3
          libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2
          libkeyutils1 libstdc++6)
# Test dependencies from pyproject.toml's [test] extra, and setuptools for setup.py.
test_deps=(setuptools wheel "pytest>=7" "pytest-timeout>=2" "hypothesis>=6" "sqlalchemy>=2.0"
           aiosqlite sniffio anyio httpx aiohttp uvloop "redis>=5" "pg8000>=1.30" "requests>=2.28"
           greenlet "coverage>=7.4"
           # pip judges environment markers by the host's interpreter, not by --python-version:
           # what 3.11.2 needs and a newer host would skip (redis: python_full_version < 3.11.3).
           async-timeout)

say() { echo "arm64-python: $*" >&2; }

# shellcheck source=tools/debian-packages.sh
source tools/debian-packages.sh
deb_init "$cache/apt" arm64 arm64-python

build_sysroot() {
    local debs fresh=$cache/root.new
    deb_update "http://deb.debian.org/debian $suite main" \
               "http://deb.debian.org/debian $suite-updates main" \
               "http://deb.debian.org/debian-security $suite-security main"
    debs=$(deb_download "${packages[@]}")
    rm -rf "$fresh"
    mkdir -p "$fresh"
    deb_unpack "$fresh" <<<"$debs"
    # Debian's <python3.11/pyconfig.h> includes <aarch64-linux-gnu/python3.11/pyconfig.h> from
    # the system include path, which the cross compiler does not search: put the real one there.
    cp "$fresh/usr/include/$triplet/python$v/pyconfig.h" "$fresh/usr/include/python$v/pyconfig.h"
    # The wrapper sits in the sysroot's bin directory: CPython finds its prefix from argv[0].
    cat >"$fresh/usr/bin/python$v-qemu" <<EOF
#!/bin/sh
# Debian $suite's arm64 CPython $v under qemu-user (made by tools/arm64-python.sh).
root=\$(cd "\$(dirname "\$0")/../.." && pwd)
export STACKFUL_QEMU=aarch64
exec qemu-aarch64 -L "\$root" -0 "\$0" "\$root/usr/bin/python$v" "\$@"
EOF
    chmod +x "$fresh/usr/bin/python$v-qemu"
    rm -rf "$root"
    mv "$fresh" "$root"
    # Only a sysroot that runs counts as done.
    "$wrapper" -I -c 'import ssl, sqlite3, ctypes, zlib, lzma, bz2, decimal, readline'
    "$wrapper" -c 'import platform, sys; print(sys.version.split()[0], platform.machine())' \
        >"$cache/version"
    say "CPython $(cat "$cache/version") ready in $root"
}

host_pip() {
    local py=${STACKFUL_HOST_PYTHON:-python3}
    "$py" -m pip --version >/dev/null 2>&1 || { say "no pip for $py: set STACKFUL_HOST_PYTHON"; return 1; }
    "$py" -m pip "$@"
}

install_deps() {
    local fresh=$deps.new
    rm -rf "$fresh"
    say "installing the test dependencies (arm64 wheels) into $deps"
    # manylinux wheels for the few with C parts (aiohttp, uvloop, ...): glibc 2.36 runs them.
    host_pip install -q --disable-pip-version-check --target "$fresh" --only-binary=:all: \
        --python-version "$v" --implementation cp --abi "cp${v/./}" \
        --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
        --platform manylinux_2_17_aarch64 "${test_deps[@]}" >&2
    printf '%s\n' "${test_deps[@]}" >"$fresh/.requirements"
    rm -rf "$deps"
    mv "$fresh" "$deps"
}

setup() {
    command -v qemu-aarch64 >/dev/null || { say "needs qemu-aarch64 (qemu-user)"; return 1; }
    command -v $triplet-gcc >/dev/null || { say "needs $triplet-gcc (gcc-aarch64-linux-gnu)"; return 1; }
    [ -s "$cache/version" ] && [ -x "$wrapper" ] || build_sysroot
    [ "$(cat "$deps/.requirements" 2>/dev/null)" = "$(printf '%s\n' "${test_deps[@]}")" ] \
        || install_deps
}

build() {
    setup
    say "building the extension for arm64 (setup.py under qemu, $triplet-gcc)"
    # Debian's sysconfig names /usr/include/python3.11, the host's (x86-64) headers if any: the
    # sysroot's come first.  The cross compiler's own glibc headers and libraries are Debian 12's.
    local out
    out=$(CC=$triplet-gcc LDSHARED="$triplet-gcc -shared" "$wrapper" setup.py -q build_ext \
          --inplace --build-temp build/tmp-$v-arm64 -I "$root/usr/include/python$v" 2>&1) \
        || { echo "$out" >&2; return 1; }
    local so
    so=$(ls src/stackful/_native.cpython-${v/./}-$triplet.so)
    file -b "$so" 2>/dev/null | grep -q aarch64 || [ ! -x "$(command -v file)" ] \
        || { say "$so is not an aarch64 object"; return 1; }
    say "built $so"
}

cmd=${1:-test}; shift || true
case "$cmd" in
    setup) setup; echo "$wrapper" ;;
    build) build ;;
    test)
        build
        [ $# -gt 0 ] || set -- tests/
        PYTHONPATH=src "$wrapper" -m pytest -p no:cacheprovider "$@"
        ;;
    *) say "usage: $0 [setup|build|test [PYTEST ARGS]]"; exit 2 ;;
esac
