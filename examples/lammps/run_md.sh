#!/usr/bin/env bash
# Export a trained MACE model (any TP backend) for LAMMPS and run NVT then NVE of a 3BPA
# molecule with it.
#
#   bash examples/lammps/run_md.sh [MODEL [cpu|cuda]]
#
# MODEL: an eager .model file saved by mace_run_train; default 3bpa_run/bpa.model, what
# `python examples/train_3bpa.py` writes (run from the same folder).
# Needs the lammps Python module and lmp: bash lammps_interface/build_lammps.sh
# Output in ./lammps_3bpa_run/ (model file, data file, log.lammps, 3bpa_traj.xyz).
# Environment: NVT_STEPS, NVE_STEPS, TEMP (defaults 2000, 2000, 300); MACE_GAUNT_3BPA (the
# 3BPA data folder, default ../shared/data/3bpa next to the repository); ENGINE
# (torchscript, eager or aotinductor: how LAMMPS runs the model core, default torchscript).
set -euo pipefail

main() {
    local here repo model device run data_dir
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    repo="$(cd "$here/../.." && pwd)"
    model="${1:-3bpa_run/bpa.model}"
    [[ -f "$model" ]] || { echo "run_md.sh: no model file $model (train one: python examples/train_3bpa.py)" >&2; exit 2; }
    model="$(realpath "$model")"
    device="${2:-cpu}"
    data_dir="${MACE_GAUNT_3BPA:-$repo/../shared/data/3bpa}"
    run="$PWD/lammps_3bpa_run"
    mkdir -p "$run"

    mace_gaunt_create_lammps_model "$model" -o "$run/3bpa.mliap" --dtype float64 --device "$device" \
        --engine "${ENGINE:-torchscript}"

    python - "$data_dir/train_300K.xyz" "$run/3bpa.data" <<'PY'
import sys
import ase.io
atoms = ase.io.read(sys.argv[1], index=0)
atoms.pbc = False
atoms.set_cell([30.0, 30.0, 30.0])
atoms.center()
ase.io.write(sys.argv[2], atoms, format="lammps-data", specorder=["C", "H", "N", "O"], masses=True)
print(f"wrote {sys.argv[2]}: {atoms.get_chemical_formula()} in a 30 A non-periodic box")
PY

    cd "$run"
    lmp -in "$here/in.3bpa_nvt_nve" -var model 3bpa.mliap -var data 3bpa.data \
        -var temp "${TEMP:-300}" -var nvt_steps "${NVT_STEPS:-2000}" -var nve_steps "${NVE_STEPS:-2000}"
}

main "$@"; exit $?
