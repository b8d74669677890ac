#!/usr/bin/env bash
# Prepare, on a machine WITH network, what gpu_check.sh needs on a GPU machine without:
#   BUNDLE/lammps-pruned.tar.gz   pruned LAMMPS source (prune_lammps_source.sh)
#   BUNDLE/wheels/*.whl           Python packages that GPU image lacks (for its Python 3.12)
# BUNDLE defaults to .gpu_bundle in the repository root; it is added to .git/info/exclude,
# so it travels to the device machine only when named in `carry`.
#
# Usage: bash lammps_interface/gpu_prepare.sh [BUNDLE] [PYTHON_VERSION (default 3.12)]
set -euo pipefail
trap 'echo "gpu_prepare.sh: error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

main() {
    local repo bundle pyver
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    bundle="$(realpath -m "${1:-$repo/.gpu_bundle}")"
    pyver="${2:-3.12}"
    mkdir -p "$bundle/wheels"
    if [[ "$bundle" == "$repo/.gpu_bundle" ]] && ! grep -qx '/.gpu_bundle/' "$repo/.git/info/exclude" 2>/dev/null; then
        echo '/.gpu_bundle/' >> "$repo/.git/info/exclude"
    fi

    bash "$repo/lammps_interface/prune_lammps_source.sh" "$bundle/lammps-pruned.tar.gz"

    # What `import mace` + our package need that the GPU image (torch, numpy, scipy,
    # pandas, h5py, matplotlib, opt_einsum_fx, torchmetrics, cython, ... ) lacks; e3nn is
    # pinned because the image may hold another version. Versions: those we test with.
    local pkgs=(mace-torch==0.3.16 e3nn==0.4.4 ase==3.29.0 matscipy==1.3.1 lmdb==3.0.0
                orjson==3.13.0 torch-ema==0.3)
    local plats=()
    for n in 39 35 34 31 28 27 24 17 5; do plats+=(--platform "manylinux_2_${n}_x86_64"); done
    plats+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
    rm -f "$bundle"/wheels/*.whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
        "${plats[@]}" -d "$bundle/wheels" "${pkgs[@]}"
    echo "gpu_prepare.sh: bundle in $bundle:"
    ls -la "$bundle" "$bundle/wheels"
    du -sh "$bundle"
}

main "$@"; exit $?
