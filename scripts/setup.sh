#!/usr/bin/env bash
# Set up everything mace-gaunt-plugin needs on a fresh machine, idempotently:
# a virtual environment (outside the repo), torch, this package with its test extras,
# and LAMMPS with ML-IAP + Python (built once, cached). Reruns take seconds.
#
#   MACE_GAUNT_VENV   where the venv lives (default ~/.cache/mace-gaunt-plugin/venv)
#   TORCH_SPEC        the torch to install first (default torch==2.13.0, a CPU build;
#                     on a GPU machine install your CUDA torch into the venv instead)
#   SKIP_LAMMPS=1     do not build LAMMPS
#   MGP_LAMMPS_RELEASE  the LAMMPS release to build: 20260704 (default) or 20250204
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${MACE_GAUNT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mace-gaunt-plugin/venv}

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating venv $venv"
  python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
python -m pip install -q --upgrade pip
# torch first and pinned, so no resolver ever pulls a multi-GB CUDA build by accident
python -c "import torch" 2>/dev/null || python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
python -m pip install -q "$repo[test,bench]"
# always reinstall this package itself (same version number, new code)
python -m pip install -q --no-deps --force-reinstall "$repo"
if [ "${SKIP_LAMMPS:-0}" != "1" ]; then
  bash "$repo/lammps_interface/build_lammps.sh"
fi
echo "[setup] ready: source $venv/bin/activate"
