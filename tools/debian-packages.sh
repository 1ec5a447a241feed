# Sourced by tools/sid-python.sh and tools/arm64-python.sh: Debian packages of any suite and
# architecture, fetched by a private apt configuration (its own source list, package lists and
# cache under one directory; nothing installed, no `dpkg --add-architecture`) and unpacked with
# `dpkg -x`.
#
#   deb_init APT_DIR ARCH NAME      NAME prefixes the progress lines (on stderr)
#   deb_update SOURCE_LINE...       write the source list, fetch the package lists (once per run)
#   deb_download PACKAGE...         download those not in APT_DIR/debs yet; print every .deb path
#   deb_unpack DIR                  unpack each .deb path read from stdin into DIR

deb_init() {
    deb_apt_dir=$1
    deb_name=$3
    deb_apt_opts=(-q -o "Dir::Etc::sourcelist=$deb_apt_dir/sources.list"
                  -o Dir::Etc::sourceparts=- -o "Dir::State=$deb_apt_dir/state"
                  -o "Dir::State::Lists=$deb_apt_dir/lists" -o Dir::State::status=/dev/null
                  -o "Dir::Cache=$deb_apt_dir/cache" -o "APT::Architecture=$2"
                  -o "APT::Sandbox::User=$(id -un)")
    deb_lists_fresh=0
}

deb_say() { echo "$deb_name: $*" >&2; }

deb_update() {
    [ "$deb_lists_fresh" = 1 ] && return
    mkdir -p "$deb_apt_dir/lists/partial" "$deb_apt_dir/cache/archives/partial" \
             "$deb_apt_dir/state" "$deb_apt_dir/debs"
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg signed= line
    [ -r "$keyring" ] && signed="[signed-by=$keyring] "
    for line in "$@"; do
        echo "deb ${signed}$line"
    done >"$deb_apt_dir/sources.list"
    deb_say "updating the package lists (${1%% main*}...)"
    apt-get "${deb_apt_opts[@]}" update >&2
    deb_lists_fresh=1
}

deb_download() {
    local name version arch file debs=() missing=()
    # One query for all (each apt call reads the suite's whole package list).
    while read -r name version arch; do
        file=$deb_apt_dir/debs/${name}_${version//:/%3a}_$arch.deb  # the epoch's colon, escaped
        debs+=("$file")
        [ -s "$file" ] || missing+=("$name")
    done < <(apt-cache "${deb_apt_opts[@]}" show --no-all-versions "$@" | awk '
        /^Package:/ {p = $2} /^Version:/ {v = $2} /^Architecture:/ {a = $2}
        /^$/ && p {print p, v, a; p = ""} END {if (p) print p, v, a}')
    [ ${#debs[@]} -eq $# ] || { deb_say "the suite lacks some of: $*"; return 1; }
    if [ ${#missing[@]} -gt 0 ]; then
        (cd "$deb_apt_dir/debs" && apt-get "${deb_apt_opts[@]}" download "${missing[@]}" >&2)
    fi
    for file in "${debs[@]}"; do
        [ -s "$file" ] || { deb_say "the download gave no $file"; return 1; }
    done
    printf '%s\n' "${debs[@]}"
}

deb_unpack() {
    local deb
    while read -r deb; do
        dpkg -x "$deb" "$1"
    done
}
