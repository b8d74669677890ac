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
#   2. ML-IAP's MLIAPData (4 Jul 2026, which added `lmp_firstneigh` for the ACE
#      descriptor): the copy of the neighbour list was allocated as (atoms in the list) x
#      (all pairs of the rank), which grows with the square of the atoms: 1.15 GB per rank
#      for a 4000-atom box, 6.5 GB per rank on two ranks (ghost neighbour lists), and
#      "Failed to reallocate 73728000000 bytes" for 32,000 atoms on one rank.  Patched to
#      (atoms) x (most pairs of one atom), what the array holds; `memory_usage` (LAMMPS'
#      "Per MPI rank memory allocation") counts that shape.  Releases without
#      `lmp_firstneigh` (4 Feb 2025) are left as they are.
#
# Usage: bash lammps_interface/patch_lammps_source.sh LAMMPS_TREE
set -euo pipefail

MARK="mace-gaunt-plugin patch"
die() { echo "patch_lammps_source.sh: error: $*" >&2; exit 1; }

# $1 file, $2 line that must be there exactly once
require_once() {
    local file="$1" anchor="$2" hits
    [[ -f "$file" ]] || die "$file missing"
    hits="$(grep -cxF -- "$anchor" "$file" || true)"
    [[ "$hits" == 1 ]] || die "$file: the line '$anchor' is there $hits times, not once (a LAMMPS release these patches do not know)"
}

# $1 file, $2 anchor line (exact), $3 line to insert before it
insert_before() {
    local file="$1" anchor="$2" line="$3"
    require_once "$file" "$anchor"
    awk -v anchor="$anchor" -v line="$line" '$0 == anchor { print line } { print }' "$file" >"$file.mgp-tmp"
    mv "$file.mgp-tmp" "$file"
}

# $1 file, $2 line (exact, once), $3 its replacement (may hold several lines, may be empty)
replace_line() {
    local file="$1" old="$2" new="$3"
    require_once "$file" "$old"
    OLD="$old" NEW="$new" awk '$0 == ENVIRON["OLD"] { if (ENVIRON["NEW"] != "") print ENVIRON["NEW"]; next } { print }' \
        "$file" >"$file.mgp-tmp"
    mv "$file.mgp-tmp" "$file"
}

patch_coeff_count() {   # $1 pair_mliap.cpp or pair_mliap_kokkos.cpp
    local file="$1"
    grep -qF "$MARK" "$file" && return 0
    insert_before "$file" '  char** elemtypes = &arg[2];' \
        "  if (narg != 2 + atom->ntypes) error->all(FLERR, \"pair_coeff * * names {} element(s) for {} atom type(s): pair_style mliap needs exactly one element name (or NULL) per atom type, in type order ($MARK)\", narg - 2, atom->ntypes);"
}

patch_firstneigh_shape() {   # $1 the ML-IAP source folder
    local cpp="$1/mliap_data.cpp" h="$1/mliap_data.h"
    grep -qF "lmp_firstneigh" "$cpp" || return 0   # a release without the array
    grep -qF "$MARK" "$cpp" && return 0
    local grow_rows='    memory->grow(lmp_firstneigh, natomneigh, nneigh_max, "MLIAPData:lmp_firstneigh");'
    local grow_pairs='    memory->grow(lmp_firstneigh, natomneigh, nneigh, "MLIAPData:lmp_firstneigh");'
    local usage='  bytes += (double) nneigh_max * natomneigh_max * sizeof(int);    // lmp_firstneigh'
    local anchor   # every anchor first, so that a release these lines do not fit is left untouched
    require_once "$h" '  int npairs;                    // number of ij neighbor pairs'
    for anchor in '  nmax = 0;' "$grow_rows" "$grow_pairs" '  int nneigh = 0;' '    nneigh += ninside;' \
        '  if (nneigh_max < nneigh) {' "$usage"; do
        require_once "$cpp" "$anchor"
    done
    insert_before "$h" '  int npairs;                    // number of ij neighbor pairs' \
        "  int firstneigh_rows, firstneigh_width;    // allocated shape of lmp_firstneigh ($MARK)"
    insert_before "$cpp" '  nmax = 0;' '  firstneigh_rows = firstneigh_width = 0;'
    replace_line "$cpp" "$grow_rows" ''
    replace_line "$cpp" "$grow_pairs" ''
    replace_line "$cpp" '  int nneigh = 0;' '  int nneigh = 0, width = 1;'
    replace_line "$cpp" '    nneigh += ninside;' $'    nneigh += ninside;\n    if (ninside > width) width = ninside;'
    insert_before "$cpp" '  if (nneigh_max < nneigh) {' \
        $'  // lmp_firstneigh: a row per atom of the list, as wide as the most pairs of one atom ('"$MARK"$')\n  if (firstneigh_rows < natomneigh || firstneigh_width < width) {\n    if (firstneigh_rows < natomneigh) firstneigh_rows = natomneigh;\n    if (firstneigh_width < width) firstneigh_width = width;\n    memory->destroy(lmp_firstneigh);\n    memory->create(lmp_firstneigh, firstneigh_rows, firstneigh_width, "MLIAPData:lmp_firstneigh");\n  }\n'
    replace_line "$cpp" "$usage" \
        "  bytes += (double) firstneigh_rows * firstneigh_width * sizeof(int);    // lmp_firstneigh ($MARK)"
}

main() {
    [[ $# -eq 1 && -d "$1/src" ]] || die "usage: $0 LAMMPS_TREE (a tree with src/)"
    local tree="$1"
    patch_coeff_count "$tree/src/ML-IAP/pair_mliap.cpp"
    patch_firstneigh_shape "$tree/src/ML-IAP"
    if [[ -f "$tree/src/KOKKOS/pair_mliap_kokkos.cpp" ]]; then
        patch_coeff_count "$tree/src/KOKKOS/pair_mliap_kokkos.cpp"
    fi
}

main "$@"
