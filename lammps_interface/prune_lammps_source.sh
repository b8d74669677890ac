#!/usr/bin/env bash
# Make a small LAMMPS source tarball for machines without network: the core of src/,
# the packages ML-IAP, ML-SNAP, PYTHON, KOKKOS, OPENMP (+ STUBS), cmake/, python/ and
# lib/kokkos (from the source, or KOKKOS_SRC). Build it there with
#     LAMMPS_SRC=lammps-pruned.tar.gz bash lammps_interface/build_lammps.sh [--kokkos-cuda ARCH]
#
# Usage: bash lammps_interface/prune_lammps_source.sh OUT.tar.gz
# Source: LAMMPS_SRC (tree or tarball) if set, else the Debian tarball of release
# MGP_LAMMPS_RELEASE (default: build_lammps.sh's default) that build_lammps.sh fetched
# into its cache (run build_lammps.sh first).
set -euo pipefail
trap 'echo "prune_lammps_source.sh: error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR
die() { echo "prune_lammps_source.sh: error: $*" >&2; exit 1; }
# shellcheck source=lammps_releases.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lammps_releases.sh"

[[ $# -eq 1 ]] || die "usage: $0 OUT.tar.gz"
OUT="$(realpath -m "$1")"
PACKAGES=(ML-IAP ML-SNAP PYTHON KOKKOS OPENMP STUBS)
CACHE_ROOT="${MGP_LAMMPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mace-gaunt-plugin}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
if [[ -n "${LAMMPS_SRC:-}" && -d "$LAMMPS_SRC" ]]; then
    full="$(realpath "$LAMMPS_SRC")"
else
    release="${MGP_LAMMPS_RELEASE:-$LAMMPS_DEFAULT_RELEASE}"
    lammps_release_info "$release" || die "unknown LAMMPS release '$release' (known: $LAMMPS_RELEASES)"
    tarball="${LAMMPS_SRC:-$CACHE_ROOT/downloads/$DEBIAN_TARBALL}"
    [[ -f "$tarball" ]] \
        || die "no LAMMPS source ($tarball): set LAMMPS_SRC or run bash lammps_interface/build_lammps.sh --release $release first"
    mkdir -p "$scratch/full"
    prefix="$(lammps_tar_prefix "$tarball")" || die "$tarball holds no LAMMPS tree (no src/version.h)"
    lammps_tar_extract "$tarball" "$prefix" "$scratch/full" src cmake python
    # lib/kokkos is optional (Debian's dfsg tarball has none)
    lammps_tar_extract "$tarball" "$prefix" "$scratch/full" lib/kokkos 2>/dev/null || true
    full="$scratch/full"
fi
[[ -f "$full/src/version.h" ]] || die "$full is not a LAMMPS tree"

version="$(sed -n 's/^#define LAMMPS_VERSION "\(.*\)"/\1/p' "$full/src/version.h")"
version="$(date -d "$version" +%Y%m%d 2>/dev/null || echo "${version// /}")"
top="lammps-$version-pruned"
dest="$scratch/$top"
mkdir -p "$dest/src" "$dest/lib"
# core: the files directly in src/ and its lower-case folders (fmt/); package folders
# are upper-case and only those listed are kept
find "$full/src" -maxdepth 1 -type f -exec cp -p {} "$dest/src/" \;
while IFS= read -r sub; do
    cp -a "$sub" "$dest/src/"
done < <(find "$full/src" -mindepth 1 -maxdepth 1 -type d -name '*[a-z]*')
for pkg in "${PACKAGES[@]}"; do
    [[ -d "$full/src/$pkg" ]] || die "package folder src/$pkg missing in $full"
    cp -a "$full/src/$pkg" "$dest/src/"
done
cp -a "$full/cmake" "$full/python" "$dest/"
if [[ -n "${KOKKOS_SRC:-}" ]]; then
    [[ -f "$KOKKOS_SRC/CMakeLists.txt" ]] || die "KOKKOS_SRC=$KOKKOS_SRC is not a Kokkos source tree"
    cp -a "$KOKKOS_SRC" "$dest/lib/kokkos"
elif [[ -d "$full/lib/kokkos" ]]; then
    cp -a "$full/lib/kokkos" "$dest/lib/"
else
    echo "prune_lammps_source.sh: note: no Kokkos source (Debian's tarball has none; set KOKKOS_SRC to a" \
         "Kokkos tree to include one: >= 5.1.0 for LAMMPS 20260704, >= 4.5.01 for 20250204); the tarball builds the plain ML-IAP path only" >&2
fi
find "$dest/python" -xtype l -delete
# Kokkos ships docs, examples and tests the build does not need
rm -rf "$dest/lib/kokkos/example" "$dest/lib/kokkos/benchmarks" \
       "$dest"/lib/kokkos/*/unit_test "$dest"/lib/kokkos/*/perf_test "$dest/lib/kokkos/docs" 2>/dev/null || true
tar -czf "$OUT" -C "$scratch" "$top"
echo "prune_lammps_source.sh: wrote $OUT ($(du -h "$OUT" | cut -f1), $top)"
