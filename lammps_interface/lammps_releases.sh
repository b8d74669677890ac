# Sourced by build_lammps.sh and prune_lammps_source.sh (not run): the LAMMPS releases we
# build from Debian's source packages, and how to find the tree inside a LAMMPS tarball.
#
# A release is fetched from the Debian suite that ships it; when that suite moves on to a
# newer LAMMPS, `apt-get source` brings another tarball and build_lammps.sh stops with the
# name it got (set LAMMPS_SRC, or add the new release here with its sha256).

LAMMPS_DEFAULT_RELEASE=20260704
LAMMPS_RELEASES="20260704 20250204"

# $1 release (YYYYMMDD) -> DEBIAN_SUITE, DEBIAN_TARBALL, DEBIAN_SHA256, DEBIAN_SIZE_MB and
# KOKKOS_MIN (the Kokkos its KOKKOS package needs; neither Debian tarball ships one);
# fails for a release not in the table.
lammps_release_info() {
    case "$1" in
        20260704)   # "4 Jul 2026", Debian sid (20260704+dfsg-2); the tarball has no top folder
            DEBIAN_SUITE=sid
            DEBIAN_TARBALL="lammps_20260704+dfsg.orig.tar.gz"
            DEBIAN_SHA256="cddbc45a047416bd48a4a0b87f24a5b61b3446982b74d18cafe619c22b17eb62"
            DEBIAN_SIZE_MB=214
            KOKKOS_MIN=5.1.0 ;;   # and C++20
        20250204)   # "4 Feb 2025", Debian trixie (20250204+dfsg.1); top folder lammps-4Feb2025/
            DEBIAN_SUITE=trixie
            DEBIAN_TARBALL="lammps_20250204+dfsg.1.orig.tar.xz"
            DEBIAN_SHA256="3671165bd52fad36734e0a9136c5bc5ecb225e03988f8c89aa13366a8b53b1c7"
            DEBIAN_SIZE_MB=132
            KOKKOS_MIN=4.5.01 ;;
        *) return 1 ;;
    esac
}

# $1 tarball -> the path prefix of its LAMMPS tree: "" (Debian's 20260704 tarball has no
# top folder), "lammps-4Feb2025/", "lammps-20260704-pruned/"; fails when there is no
# src/version.h in it.
lammps_tar_prefix() {
    local hit
    # awk stops at the first hit; tar then dies of SIGPIPE, hence the `|| true`
    hit="$(tar -tf "$1" 2>/dev/null | awk '/(^|\/)src\/version\.h$/ { print; exit }' || true)"
    [[ -n "$hit" ]] || return 1
    echo "${hit%src/version.h}"
}

# $1 tarball, $2 prefix from lammps_tar_prefix, $3 destination, then the folders of the
# tree to unpack (src cmake python lib/kokkos ...): unpacked as $3/src, $3/cmake, ...
lammps_tar_extract() {
    local tarball="$1" prefix="$2" dest="$3" strip
    shift 3
    strip=0
    [[ -z "$prefix" ]] || strip="$(awk -F/ '{ print NF - 1 }' <<<"$prefix")"
    local members=()
    local m
    for m in "$@"; do members+=("$prefix$m"); done
    tar -xf "$tarball" -C "$dest" --strip-components="$strip" "${members[@]}"
}
