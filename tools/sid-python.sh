#!/usr/bin/env bash
# CPython versions this machine's distribution lacks (3.14, 3.15), taken from Debian's unstable
# suite ("sid") without installing anything system-wide:
#   - a private apt configuration (its own source list, package lists and cache) names sid;
#   - `apt-get download` fetches the interpreter, its standard library, its headers and the shared
#     libraries it links (sid's glibc included), and `dpkg -x` unpacks them into one sysroot per
#     version;
#   - a wrapper script runs the sysroot's python through the sysroot's own dynamic loader, so it
#     uses the sysroot's libraries and never the host's.  `--argv0` makes the wrapper
#     sys.executable, so venvs, pip, pytest and subprocesses all start the same interpreter;
#     `python -m venv` installs pip from the sysroot's own pip wheel.
# Extensions built with the host's gcc against the sysroot's headers load there: they link
# against the host's older glibc, and glibc is forward compatible.
#
#   tools/sid-python.sh [VERSION...]        (default: 3.14 3.15)
#
# Prints one wrapper path per version on stdout (progress goes to stderr).  Idempotent: a sysroot
# already complete is reused without touching the network.  The cache lives outside the work
# tree: $STACKFUL_SID_PYTHON_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/stackful/sid-python;
# delete a version's directory there to fetch it again.
set -euo pipefail

versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.14 3.15)
cache=${STACKFUL_SID_PYTHON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stackful/sid-python}

case "$(uname -m)" in
    x86_64) triplet=x86_64-linux-gnu; loader=ld-linux-x86-64.so.2; debarch=amd64 ;;
    aarch64) triplet=aarch64-linux-gnu; loader=ld-linux-aarch64.so.1; debarch=arm64 ;;
    *) echo "sid-python: no recipe for $(uname -m)" >&2; exit 1 ;;
esac

# What the interpreter links, beyond its own packages (Debian's names in sid).
shared_libs=(libc6 libssl3t64 libffi8 zlib1g libexpat1 libbz2-1.0 liblzma5 libzstd1 libsqlite3-0
             libmpdec4 libuuid1 libncursesw6 libtinfo6 libreadline8t64 libdb5.3t64 libgcc-s1
             python3-pip-whl python3-setuptools-whl)

packages_for() {
    local v=$1
    echo "python$v python$v-minimal libpython$v libpython$v-minimal libpython$v-stdlib" \
         "libpython$v-dev python$v-venv ${shared_libs[*]}"
}

# shellcheck source=tools/debian-packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/debian-packages.sh"
deb_init "$cache/apt" "$debarch" sid-python

build_sysroot() {
    local v=$1 dir=$cache/$1
    deb_update "http://deb.debian.org/debian sid main"
    local debs
    # shellcheck disable=SC2046
    debs=$(deb_download $(packages_for "$v"))
    local fresh=$dir.new
    rm -rf "$fresh"
    mkdir -p "$fresh/root"
    deb_unpack "$fresh/root" <<<"$debs"
    local root=$dir/root usr=$fresh/root/usr
    # Debian's <python3.X/pyconfig.h> only includes <TRIPLET/python3.X/pyconfig.h> from the
    # system include path, which the host lacks: put the real one in its place.
    cp "$usr/include/$triplet/python$v/pyconfig.h" "$usr/include/python$v/pyconfig.h"
    # ensurepip (so `python -m venv` with pip) looks for its wheels in WHEEL_PKG_DIR, which
    # Debian sets to the system's /usr/share/python-wheels: point it into the sysroot.
    sed -i "s|'WHEEL_PKG_DIR': '/usr/share/python-wheels/'|'WHEEL_PKG_DIR': '$root/usr/share/python-wheels/'|" \
        "$usr"/lib/python"$v"/_sysconfigdata_*.py
    # The wrapper sits in the sysroot's bin directory, so that CPython finds its prefix there by
    # itself (no PYTHONHOME, which every child process would inherit, another Python included).
    cat >"$usr/bin/python$v-sysroot" <<EOF
#!/bin/sh
# CPython $v from Debian sid, run by its sysroot's own loader (made by tools/sid-python.sh).
root='$root'
exec "\$root/usr/lib/$triplet/$loader" --argv0 "\$0" \\
    --library-path "\$root/usr/lib/$triplet:\$root/usr/lib" "\$root/usr/bin/python$v" "\$@"
EOF
    chmod +x "$usr/bin/python$v-sysroot"
    rm -rf "$dir"
    mv "$fresh" "$dir"
    # Only a sysroot that runs counts as done.
    "$root/usr/bin/python$v-sysroot" -I -c 'import ssl, sqlite3, ctypes, zlib, lzma, bz2, ensurepip'
    "$root/usr/bin/python$v-sysroot" -c 'import sys; print(sys.version.split()[0])' >"$dir/version"
    echo "sid-python: CPython $(cat "$dir/version") ready in $dir" >&2
}

for v in "${versions[@]}"; do
    [[ "$v" =~ ^3\.[0-9]+$ ]] || { echo "sid-python: not a version: $v" >&2; exit 1; }
    wrapper=$cache/$v/root/usr/bin/python$v-sysroot
    [ -s "$cache/$v/version" ] && [ -x "$wrapper" ] || build_sysroot "$v"
    echo "$wrapper"
done
