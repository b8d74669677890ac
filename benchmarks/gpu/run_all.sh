#!/usr/bin/env bash
# The one GPU run: install carried wheels, then the stages named in MGP_GPU_STAGES, in
# that order, and pack every result into $OUT/gpu_results.tar.gz.
#
# Prepare here (network):  bash benchmarks/gpu/prepare.sh   (.whl/ and .gpu_bundle/)
# Run there (no network):  bash benchmarks/gpu/run_all.sh   with carry [.whl, .gpu_bundle]
# Check here, on CPU:      bash benchmarks/gpu/run_all.sh --dry-run
#
# Stages (MGP_GPU_STAGES, default "kernels lammps cuda model"; put the one you need most first):
#   kernels the lean Gaunt conv (issue 12): tests/test_conv_primitives.py on CUDA (Triton
#           kernels = torch primitives = reference), then bench_model.py at hidden L = 1, 2
#           (2048-atom Cu) for e3nn and grid with kernel=reference/torch/triton: time and
#           max_memory_allocated of inference and a training step; then which kernel
#           kernel=auto should take on CUDA (benchmarks/gpu/auto_kernel.py); then the conv
#           site alone (bench_sites.py, hidden L = 1, 3)
#   lammps  LAMMPS built from the pruned tree, LAMMPS = ASE (float64, model on the GPU),
#           2048-atom Cu NVE MD ns/day (lammps_interface/gpu_check.sh) for the backends in
#           MGP_GPU_LAMMPS_BACKENDS (default "e3nn grid"), once per export engine in
#           MGP_GPU_LAMMPS_ENGINES (default "torchscript eager"; the build is reused;
#           "aotinductor" compiles the core on the GPU first, minutes per backend)
#   cuda    tests/test_cuda.py: every backend, CUDA = CPU
#   sites   bench_sites.py: conv and product sites, hidden L = 1, 2, 3
#   model   bench_model.py --preset gpu: whole model, every backend and cuEquivariance;
#           extra arguments in MGP_GPU_MODEL_ARGS (e.g. "--scans channels,cells")
# The whole command keeps to MGP_GPU_DEADLINE seconds (default 540, under the device's
# 600 s per call): each stage gets a time limit, the last one what is left, and a failed
# stage does not stop the later ones (its log says why; the failed steps are listed at
# the end).
#
# --dry-run: the same stages and arguments on this machine's CPU, each with one tiny case
# (the sizes below override the GPU ones; the Triton kernels run under Triton's
# interpreter, in the conv site only; LAMMPS is not built: its script's syntax, engines
# and backends are checked), with the Python environment as it is (no wheels installed) and OUT defaulting
# to a temporary folder. Exits 1 if any step failed, so a lent GPU is not spent on a typo.
set -uo pipefail
dry=0
case "${1:-}" in
  --dry-run) dry=1 ;;
  "") ;;
  *) echo "run_all.sh: unknown argument '$1' (only --dry-run)" >&2; exit 2 ;;
esac
repo=$(cd "$(dirname "$0")/../.." && pwd)
if ((dry)); then out=${OUT:-$(mktemp -d /tmp/mgp-gpu-dry.XXXXXX)}; else out=${OUT:-$repo/gpu_out}; fi
res=$out/results
mkdir -p "$res"
py=${PYTHON:-python3}
site=/tmp/mgp-site
stages=${MGP_GPU_STAGES:-kernels lammps cuda model}
deadline=${MGP_GPU_DEADLINE:-540}
pack_s=15
t0=$SECONDS
failed=()
stage() { echo; echo "=== [$((SECONDS - t0)) s] $*"; }
left() { echo $((deadline - pack_s - (SECONDS - t0))); }
# limit N: N seconds, or what is left before the deadline if that is less (at least 1)
limit() { local l; l=$(left); ((l < $1)) || l=$1; ((l > 0)) || l=1; echo "$l"; }
# note STEP: right after a command (or pipeline), record it if it failed
note() { local rc=$?; ((rc == 0)) || failed+=("$1 (exit $rc)"); }
# the device and sizes of every stage: the GPU's, or one tiny CPU case for --dry-run
if ((dry)); then
  deadline=${MGP_GPU_DEADLINE:-100000}
  dev=cpu
  export TRITON_INTERPRET=1  # the Triton kernels on CPU tensors
  tiny_model=(--device cpu --Ls 1 --scans L --base-L 1 --base-channels 4 --base-cells 1 --channels 4 --cells 1
              --warmup 0 --repeats 1 --no-plot --fail-fast --no-cueq)
  tiny_sites=(--device cpu --hidden-L 1 --cpu-cells 1 --channels 4 --cpu-repeats 1 --cpu-warmup 0)
else
  dev=cuda
  tiny_model=()
  tiny_sites=()
fi

if ((dry)); then
  stage "dry run on CPU: $("$py" --version 2>&1), results in $res"
  export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
  cd "$repo"
  "$py" -c 'import torch, e3nn, mace, mace_gaunt_plugin as m; print("torch", torch.__version__, "| backends", m.available_backends())'
  note "imports"
else
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
note "install and imports"
fi

for s in $stages; do
  case $s in
    lammps)
      if ((dry)); then
        stage "LAMMPS (dry run): gpu_check.sh's syntax, engines and backends (no build)"
        bash -n lammps_interface/gpu_check.sh; note "lammps: bash -n gpu_check.sh"
        "$py" - ${MGP_GPU_LAMMPS_ENGINES:-torchscript eager} <<'PY'
import sys
from lammps_interface.mliap_unified import ENGINES
bad = sorted(set(sys.argv[1:]) - set(ENGINES))
sys.exit(f"MGP_GPU_LAMMPS_ENGINES: unknown engine(s) {bad}; known: {list(ENGINES)}" if bad else 0)
PY
        note "lammps: engines"
        "$py" - ${MGP_GPU_LAMMPS_BACKENDS:-e3nn grid} <<'PY'
import sys
import mace_gaunt_plugin as m
bad = sorted(set(sys.argv[1:]) - set(m.available_backends()))
sys.exit(f"MGP_GPU_LAMMPS_BACKENDS: unknown backend(s) {bad}" if bad else 0)
PY
        note "lammps: backends"
        "$py" -m lammps_interface.md_benchmark --help > /dev/null; note "lammps: md_benchmark --help"
        continue
      fi
      for engine in ${MGP_GPU_LAMMPS_ENGINES:-torchscript eager}; do
        stage "LAMMPS ($engine): build from the pruned tree (once), LAMMPS = ASE on GPU, MD ns/day (2048-atom Cu)"
        OUT="$res/lammps_$engine" MGP_GPU_BUNDLE="$repo/.gpu_bundle" timeout "$(limit 300)" \
          bash lammps_interface/gpu_check.sh --no-openmp --engine "$engine" \
          --backends "${MGP_GPU_LAMMPS_BACKENDS:-e3nn grid}" 2>&1 | tail -30
        note "lammps ($engine)"
      done ;;
    kernels)
      stage "lean conv kernels on $dev: correctness, then time and memory of kernel=torch and kernel=triton against e3nn and the former conv"
      timeout "$(limit 120)" "$py" -m pytest -q -p no:cacheprovider -m cuda tests/test_conv_primitives.py 2>&1 \
        | tail -15 | tee "$res/test_conv_primitives_cuda.log"
      note "kernels: pytest -m cuda"
      kbackends=e3nn,grid:kernel=reference,grid:kernel=torch,grid:kernel=triton
      # a whole training step takes minutes under Triton's interpreter: the dry run times the
      # Triton kernels in the conv site below only (tests/test_triton_compile.py compiles them)
      ((dry)) && kbackends=${kbackends%,grid:kernel=triton}
      timeout "$(limit 200)" "$py" benchmarks/bench_model.py --preset gpu --scans L --Ls 1,2 \
        --backends "$kbackends" \
        --max-minutes 2.5 --out "$res/model_gpu_kernels" ${tiny_model[@]+"${tiny_model[@]}"} 2>&1 | tail -40
      note "kernels: bench_model"
      # which kernel kernel=auto should take on CUDA (AUTO_CUDA_KERNEL in backends/_sphere_sites.py)
      "$py" benchmarks/gpu/auto_kernel.py "$res/model_gpu_kernels.json" --tests-log "$res/test_conv_primitives_cuda.log" \
        | tee "$res/auto_kernel.txt"
      note "kernels: auto_kernel"
      # the conv site alone, fwd+bwd (goals: <= 3 ms at L = 1, <= 4 ms at L = 3)
      timeout "$(limit 100)" "$py" benchmarks/bench_sites.py --device cuda --hidden-L 1,3 --sites conv \
        --backends e3nn,grid:kernel=torch,grid:kernel=triton --name sites_kernels --out "$res" ${tiny_sites[@]+"${tiny_sites[@]}"} 2>&1 | tail -20
      note "kernels: bench_sites" ;;
    cuda)
      stage "correctness on CUDA (tests/test_cuda.py)"
      timeout "$(limit 90)" "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 | tee "$res/test_cuda.log"
      note "cuda: pytest" ;;
    sites)
      stage "sites: conv and product, every backend vs e3nn, hidden L = 1, 2, 3 (2048-atom Cu)"
      timeout "$(limit 140)" "$py" benchmarks/bench_sites.py --device cuda --hidden-L 1,2,3 \
        --backends e3nn,grid,gaunt,sparse --out "$res" ${tiny_sites[@]+"${tiny_sites[@]}"} 2>&1 | tail -40
      note "sites: bench_sites" ;;
    model)
      stage "whole model: inference and train step, scans (cuEquivariance included)"
      # start no new case in the last ~70 s; what ran is written after every case
      l=$(limit 600)
      # shellcheck disable=SC2086
      timeout "$l" "$py" benchmarks/bench_model.py --preset gpu ${MGP_GPU_MODEL_ARGS:-} \
        --max-minutes "$(awk -v l="$l" 'BEGIN { m = (l - 70) / 60; print (m > 0.1 ? m : 0.1) }')" \
        --out "$res/model_gpu" ${tiny_model[@]+"${tiny_model[@]}"} 2>&1 | tail -40
      note "model: bench_model" ;;
    *) echo "run_all.sh: unknown stage '$s' (kernels lammps cuda sites model)"; failed+=("unknown stage $s") ;;
  esac
done

stage "pack"
tar -czf "$out/gpu_results.tar.gz" -C "$res" .
ls -la "$out"
if ((${#failed[@]})); then
  echo "=== failed steps: ${#failed[@]}"; printf '  - %s\n' "${failed[@]}"
fi
echo "=== done in $((SECONDS - t0)) s"
if ((dry)); then
  if ((${#failed[@]})); then echo "=== dry run: FAILED"; exit 1; fi
  echo "=== dry run: every stage passed"
fi
