#!/usr/bin/env bash
# Prepare, on a machine with network, what benchmarks/gpu/run_all.sh carries to a GPU
# machine without: .whl/ (Python 3.12 wheels the GPU image lacks, this package's own
# wheel, cuEquivariance's CUDA-13 kernels repacked as one tar.xz) and .gpu_bundle/ (the
# pruned LAMMPS source). Both are git-ignored through .git/info/exclude.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
for d in /.whl/ /.gpu_bundle/; do grep -qx "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
mkdir -p .whl
rm -f .whl/*.whl   # fresh downloads: two wheels of one package make the install there fail
plats=(); for n in 39 35 34 31 28 27 24 17; do plats+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plats[@]}" --platform manylinux2014_x86_64 --platform any -d .whl \
  mace-torch==0.3.16 e3nn==0.4.4 ase==3.29.0 matscipy==1.3.1 configargparse prettytable wcwidth \
  torch-ema==0.3 lmdb==3.0.0 orjson gitpython gitdb smmap platformdirs opt-einsum-fx safetensors \
  "cuequivariance==0.13.*" "cuequivariance-torch==0.13.*"
python3 -m pip wheel -q --no-deps python-hostlist -w .whl
if [ ! -f .whl/cueq_ops.tar.xz ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plats[@]}" -d "$tmp" "cuequivariance-ops-torch-cu13==0.13.*" "cuequivariance-ops-cu13==0.13.*"
  (cd "$tmp" && for w in *.whl; do unzip -q -o "$w"; done && rm -f ./*.whl && tar -cJf "$repo/.whl/cueq_ops.tar.xz" .)
  rm -rf "$tmp"
fi
rm -f .whl/mace_gaunt_plugin-*.whl
python3 -m pip wheel -q --no-deps "$repo" -w .whl   # this package, as users install it
[ -f .gpu_bundle/lammps-pruned.tar.gz ] || bash lammps_interface/prune_lammps_source.sh .gpu_bundle/lammps-pruned.tar.gz
du -sh .whl .gpu_bundle
