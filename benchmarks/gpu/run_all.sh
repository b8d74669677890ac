#!/usr/bin/env bash
# The one GPU run: install carried wheels, check correctness on CUDA, time the sites,
# LAMMPS MD and the whole model, pack every result into $OUT/gpu_results.tar.gz.
#
# Prepare here (network):  bash benchmarks/gpu/prepare.sh   (.whl/ and .gpu_bundle/)
# Run there (no network):  bash benchmarks/gpu/run_all.sh   with carry [.whl, .gpu_bundle]
# Stages run in order of priority, each under its own time limit, and a failed stage
# does not stop the later ones (its log says why). Summary on stdout.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$repo/gpu_out}
res=$out/results
mkdir -p "$res"
py=${PYTHON:-python3}
site=/tmp/mgp-site
t0=$SECONDS
stage() { echo; echo "=== [$((SECONDS - t0)) s] $*"; }

stage "machine"
nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$py" --version

stage "install carried wheels"
"$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$repo"/.whl/*.whl
tar -xJf "$repo/.whl/cueq_ops.tar.xz" -C "$site"
export PYTHONPATH="$site" PYTHONUNBUFFERED=1
export MGP_SITE="$site"
# the 3BPA files the CUDA tests read (../shared does not travel to the GPU machine)
[ -d "$repo/.gpu_bundle/3bpa" ] && export MACE_GAUNT_3BPA="$repo/.gpu_bundle/3bpa"
cd "$repo"
"$py" - <<'PY'
import torch, e3nn, mace, mace_gaunt_plugin as m
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
print("e3nn", e3nn.__version__, "mace", mace.__version__, "backends", m.available_backends())
import cuequivariance_torch, cuequivariance_ops_torch  # noqa: F401  (without the ops cuEq runs a slow path)
print("cuequivariance_ops_torch OK")
PY

stage "correctness on CUDA (tests/test_cuda.py)"
timeout 120 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 | tee "$res/test_cuda.log"

stage "sites: conv and product, every backend vs e3nn, hidden L = 1, 2, 3 (2048-atom Cu)"
timeout 140 "$py" benchmarks/bench_sites.py --device cuda --hidden-L 1,2,3 \
  --backends e3nn,grid,gaunt,sparse --out "$res" 2>&1 | tail -40

stage "LAMMPS: build from the pruned tree, LAMMPS = ASE on GPU, MD ns/day (2048-atom Cu)"
OUT="$res/lammps" MGP_GPU_BUNDLE="$repo/.gpu_bundle" timeout 170 bash lammps_interface/gpu_check.sh 2>&1 | tail -25

stage "whole model: inference and train step, scans (cuEquivariance included)"
timeout 400 "$py" benchmarks/bench_model.py --preset gpu --max-minutes 6 --out "$res/model_gpu" 2>&1 | tail -40

stage "pack"
tar -czf "$out/gpu_results.tar.gz" -C "$res" .
ls -la "$out"
echo "=== done in $((SECONDS - t0)) s"
