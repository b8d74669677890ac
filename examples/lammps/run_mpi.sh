#!/usr/bin/env bash
# Run a periodic fcc crystal with a MACE model on several MPI ranks (in.periodic_mpi).
#
#   bash examples/lammps/run_mpi.sh [MODEL [ELEMENT]]
#
# MODEL: an eager .model file (mace_run_train) that knows ELEMENT (default Cu); without
# one, a small random-weight Cu model (grid backend, float64) is made: it shows the
# several-ranks mechanics (and energy conservation), not physics.
# Environment: RANKS (default 2), CELLS (fcc cells per side, default 4: 256 atoms),
# STEPS (default 200), A (lattice constant, default 3.61), MASS (default 63.546),
# DEVICE (cpu or cuda; one GPU per rank: map ranks to GPUs with CUDA_VISIBLE_DEVICES).
# Needs LAMMPS built with MPI (bash lammps_interface/build_lammps.sh). Output in
# ./lammps_mpi_run/.
set -euo pipefail

main() {
    local here run model element cutoff
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    run="$PWD/lammps_mpi_run"
    mkdir -p "$run"
    element="${2:-Cu}"
    if [[ $# -ge 1 ]]; then
        [[ -f "$1" ]] || { echo "run_mpi.sh: no model file $1" >&2; exit 2; }
        model="$(realpath "$1")"
    else
        model="$run/random_cu.model"
        python - "$model" <<'PY'
import sys
import mace  # noqa: F401  (first: sets up how e3nn loads its constants)
import mace_gaunt_plugin as mgp
import torch
from e3nn import o3
from mace_gaunt_plugin.testing import default_dtype, small_mace_config
with default_dtype(torch.float64):
    torch.manual_seed(0)
    cfg = small_mace_config(atomic_numbers=(29,), r_max=4.5, hidden_irreps="16x0e + 16x1o", max_ell=2,
                            correlation=2, atomic_energies=[-3.7])
    cfg["MLP_irreps"] = o3.Irreps(str(cfg["MLP_irreps"]))
    torch.save(mgp.build_model("grid", **cfg), sys.argv[1])
print(f"wrote {sys.argv[1]}: a random-weight Cu model (grid backend, r_max 4.5, two layers)")
PY
    fi
    mace_gaunt_create_lammps_model "$model" -o "$run/model.mliap" --dtype float64 --device "${DEVICE:-cpu}"
    # ghost shell = receptive field (n_interactions x r_max) + the deck's 1 A skin
    cutoff="$(python -c 'import sys; from lammps_interface import load_model_file; print(load_model_file(sys.argv[1]).receptive_field + 1.0)' "$run/model.mliap")"
    local mpi=(mpirun -np "${RANKS:-2}")
    if mpirun --version 2>&1 | grep -q "Open MPI"; then
        mpi+=(--oversubscribe)
        [[ "$(id -u)" == 0 ]] && mpi+=(--allow-run-as-root)
    fi
    cd "$run"
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "${mpi[@]}" lmp -in "$here/in.periodic_mpi" \
        -var model model.mliap -var cutoff "$cutoff" -var element "$element" \
        -var cells "${CELLS:-4}" -var steps "${STEPS:-200}" -var a "${A:-3.61}" -var mass "${MASS:-63.546}"
}

main "$@"; exit $?
