#!/usr/bin/env bash
# Our patches to a LAMMPS source tree; build_lammps.sh applies them after unpacking (its
# cache key holds this file's sha256, so a changed patch set makes a new build).
# Idempotent; an anchor not found exactly once stops the build (a release they were not
# written for), so no patch is ever half-applied or silently skipped.
#
#   1. pair_style mliap (and mliap/kk): `pair_coeff * *` must name exactly one element
#      (or NULL) per atom type.  LAMMPS 4 Feb 2025 and 4 Jul 2026 read past the argument
#      list when it names fewer (a segfault, exit 139, or a stale word from an earlier
#      command) and ignore extra names.  The crash happens in PairMLIAP::coeff, before
#      any Python runs, so the check has to be in C++.
#
# Usage: bash lammps_interface/patch_lammps_source.sh LAMMPS_TREE
set -euo pipefail

MARK="mace-gaunt-plugin patch"
die() { echo "patch_lammps_source.sh: error: $*" >&2; exit 1; }

# $1 file, $2 anchor line (exact), $3 line to insert before it
insert_before() {
    local file="$1" anchor="$2" line="$3" hits
    [[ -f "$file" ]] || die "$file missing"
    hits="$(grep -cxF -- "$anchor" "$file" || true)"
    [[ "$hits" == 1 ]] || die "$file: the line '$anchor' is there $hits times, not once (a LAMMPS release these patches do not know)"
    awk -v anchor="$anchor" -v line="$line" '$0 == anchor { print line } { print }' "$file" >"$file.mgp-tmp"
    mv "$file.mgp-tmp" "$file"
}

patch_coeff_count() {   # $1 pair_mliap.cpp or pair_mliap_kokkos.cpp
    local file="$1"
    grep -qF "$MARK" "$file" && return 0
    insert_before "$file" '  char** elemtypes = &arg[2];' \
        "  if (narg != 2 + atom->ntypes) error->all(FLERR, \"pair_coeff * * names {} element(s) for {} atom type(s): pair_style mliap needs exactly one element name (or NULL) per atom type, in type order ($MARK)\", narg - 2, atom->ntypes);"
}

main() {
    [[ $# -eq 1 && -d "$1/src" ]] || die "usage: $0 LAMMPS_TREE (a tree with src/)"
    local tree="$1"
    patch_coeff_count "$tree/src/ML-IAP/pair_mliap.cpp"
    if [[ -f "$tree/src/KOKKOS/pair_mliap_kokkos.cpp" ]]; then
        patch_coeff_count "$tree/src/KOKKOS/pair_mliap_kokkos.cpp"
    fi
}

main "$@"
