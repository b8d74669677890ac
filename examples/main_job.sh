#!/usr/bin/env bash
# The main job: train a small MACE model with the `grid` backend on 3BPA through
# mace_run_train (held-out test errors, 100 steps of ASE Langevin MD with MACECalculator),
# then export it and run NVT + NVE MD in LAMMPS (pair_style mliap unified).
# Run after `bash scripts/setup.sh`; about 15 minutes on 2 CPU cores.
# Output in $MAIN_JOB_DIR (default: runs/ in the checkout, which git ignores):
# 3bpa_run/ (data splits, MACE logs, bpa.model) and lammps_3bpa_run/ (LAMMPS files).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${MACE_GAUNT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mace-gaunt-plugin/venv}
out=${MAIN_JOB_DIR:-$repo/runs}
# shellcheck disable=SC1091
source "$venv/bin/activate"
mkdir -p "$out"
cd "$out"
python "$repo/examples/train_3bpa.py" --tp-backend grid --workdir 3bpa_run "$@"
NVT_STEPS=${NVT_STEPS:-500} NVE_STEPS=${NVE_STEPS:-500} bash "$repo/examples/lammps/run_md.sh" 3bpa_run/bpa.model cpu
echo "main job: outputs in $out/3bpa_run and $out/lammps_3bpa_run"
