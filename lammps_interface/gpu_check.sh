#!/usr/bin/env bash
# LAMMPS on a CUDA machine WITHOUT network: build LAMMPS (plain ML-IAP + PYTHON, serial)
# from the pruned tarball, check LAMMPS = ASE (float64, model on the GPU) on a small
# Cu box, then run NVE MD on the 2048-atom fcc Cu system of DESIGN.md section 5 with e3nn
# and grid models on the GPU and print ns/day.
#
# Before, on a machine with network:  bash lammps_interface/gpu_prepare.sh   (-> .gpu_bundle/)
# On the device machine (carry .gpu_bundle):  bash lammps_interface/gpu_check.sh
# Results: $OUT/lammps_md_benchmark.json, LAMMPS logs and build.log (OUT, else gpu_check_out/
# in the repository); models and decks stay in /tmp/mgp-gpu-work-MODE.
#
# Options: --cpu-smoke     everything on the CPU with a tiny system (tests this script)
#          --backends "e3nn grid"   --steps N   --warmup N   --dtype float32|float64
#          --no-openmp     build LAMMPS without the OPENMP package (a shorter build; the
#                          model runs on the GPU either way)
#          --engine "torchscript eager aotinductor"   how LAMMPS runs the model core, one
#                          LAMMPS run per engine named (md_benchmark times the core as
#                          TorchScript and eager regardless, and compiled with aotinductor)
set -euo pipefail
trap 'echo "gpu_check.sh: error: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

main() {
    local repo bundle results py site mode backends steps warmup dtype engine
    local build_opts=()
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    bundle="${MGP_GPU_BUNDLE:-$repo/.gpu_bundle}"
    results="${OUT:-$repo/gpu_check_out}"
    py="$(command -v "${PYTHON:-python3}")"
    mode=gpu; backends="e3nn grid"; steps=100; warmup=20; dtype=float32; engine=torchscript
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --cpu-smoke) mode=cpu; shift ;;
            --backends) backends="$2"; shift 2 ;;
            --steps) steps="$2"; shift 2 ;;
            --warmup) warmup="$2"; shift 2 ;;
            --dtype) dtype="$2"; shift 2 ;;
            --engine) engine="$2"; shift 2 ;;
            --no-openmp) build_opts+=(--no-openmp); shift ;;
            *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
        esac
    done
    mkdir -p "$results"
    local t_start=$SECONDS
    echo "== gpu_check.sh ($mode) on $(hostname), $(nproc) cores, python $py"
    command -v nvidia-smi >/dev/null && nvidia-smi -L || true

    # -- preflight: what the build needs, all reported at once
    local t missing=()
    for t in g++ cmake; do command -v "$t" >/dev/null || missing+=("$t"); done
    command -v ninja >/dev/null || command -v make >/dev/null || missing+=("ninja or make")
    "$py" -c 'import numpy, Cython' 2>/dev/null || missing+=("numpy/cython in $py")
    [[ ${#missing[@]} -eq 0 ]] || { echo "gpu_check.sh: missing: ${missing[*]}" >&2; exit 1; }
    echo "tools: $(g++ --version | head -1) | $(cmake --version | head -1) | python $("$py" -c 'import sys, sysconfig; print(sys.version.split()[0], "shared libpython:", bool(sysconfig.get_config_var("Py_ENABLE_SHARED")))')"

    # -- Python packages the image lacks (wheels from gpu_prepare.sh), our package itself
    site="${MGP_SITE:-/tmp/mgp-site}"
    if [[ "$mode" == gpu ]] && compgen -G "$bundle/wheels/*.whl" >/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "$bundle"/wheels/*.whl
        export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
    fi
    if ! "$py" -c 'import mace_gaunt_plugin as m, sys; sys.exit(0 if "grid" in m.available_backends() else 1)' 2>/dev/null; then
        # not installed: put the repo on the path and register its entry points by a
        # minimal dist-info (no build backend needed, nothing fetched)
        mkdir -p "$site"
        "$py" - "$repo" "$site" <<'EOF'
import sys, tomllib, pathlib
repo, site = map(pathlib.Path, sys.argv[1:])
meta = tomllib.loads((repo / "pyproject.toml").read_text())
proj = meta["project"]
d = site / f"mace_gaunt_plugin-{proj['version']}.dist-info"
d.mkdir(parents=True, exist_ok=True)
(d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: mace-gaunt-plugin\nVersion: {proj['version']}\n")
lines = []
for group, eps in proj.get("entry-points", {}).items():
    lines.append(f"[{group}]")
    lines += [f"{k} = {v}" for k, v in eps.items()]
lines.append("[console_scripts]")
lines += [f"{k} = {v}" for k, v in proj.get("scripts", {}).items()]
(d / "entry_points.txt").write_text("\n".join(lines) + "\n")
print(f"registered entry points from pyproject.toml in {d}")
EOF
        export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$py" -c 'import mace_gaunt_plugin as m, torch, e3nn, mace; print("backends", m.available_backends(), "| torch", torch.__version__, "cuda", torch.cuda.is_available(), "| e3nn", e3nn.__version__)'

    # -- LAMMPS from the pruned tarball (cached per machine; ~1 minute on 16 cores)
    [[ -f "$bundle/lammps-pruned.tar.gz" ]] || { echo "gpu_check.sh: no $bundle/lammps-pruned.tar.gz: run gpu_prepare.sh" >&2; exit 1; }
    local t_build=$SECONDS
    LAMMPS_SRC="$bundle/lammps-pruned.tar.gz" PYTHON="$py" \
        MGP_LAMMPS_CACHE="${MGP_LAMMPS_CACHE:-/tmp/mgp-lammps-cache-$mode}" \
        bash "$repo/lammps_interface/build_lammps.sh" --jobs "$(nproc)" --offline ${build_opts[@]+"${build_opts[@]}"} 2>&1 | tee "$results/build.log"
    echo "== LAMMPS build + install: $((SECONDS - t_build)) s"

    # -- exactness (float64) + MD throughput
    local work="${MGP_GPU_WORK:-/tmp/mgp-gpu-work-$mode}"
    mkdir -p "$work"
    local args=(--backends $backends --out "$work" --steps "$steps" --warmup "$warmup" --dtype "$dtype" --engine $engine)
    if [[ "$mode" == cpu ]]; then
        args+=(--device cpu --cells 2 --channels 8 --max-ell 2)
    else
        args+=(--device cuda)
    fi
    local rc=0
    (cd "$work" && PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore "$py" -m lammps_interface.md_benchmark "${args[@]}" \
        2>&1 | grep -v -e '^  return visitor' -e '^  _Jd, _W3j' -e 'torch.load(f=' -e 'cuequivariance' ) || rc=$?
    # few files back (the device tool returns at most 8): the JSON and the LAMMPS logs
    cp "$work"/lammps_md_benchmark.json "$results"/ 2>/dev/null || true
    for b in $backends; do for e in $engine; do cp "$work/log.${b}_$e" "$results/lammps_log.${b}_$e" 2>/dev/null || true; done; done
    [[ $rc -eq 0 ]] || { echo "gpu_check.sh: md_benchmark failed (exit $rc); logs in $work" >&2; exit $rc; }
    echo "== gpu_check.sh done in $((SECONDS - t_start)) s"
}

main "$@"; exit $?
