"""A standalone ``lmp -in`` deck that loads a safe model file itself (the ``python`` lines
of :func:`lammps_interface.mliap_unified.safe_deck_lines`, then ``pair_style mliap unified
EXISTS 0``): energy and forces equal ASE's to 1e-10 relative in float64, and a code
payload named like a safe file never runs (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set and unset).

Needs the LAMMPS Python module built by ``lammps_interface/build_lammps.sh``; in CI a
missing module is an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mace_gaunt_plugin as mgp

try:
    from lammps import lammps, mliap  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise RuntimeError("CI is set but the LAMMPS Python module is missing: run build_lammps.sh first") from exc
    pytest.skip(f"LAMMPS Python module not installed ({exc}); build it with bash lammps_interface/build_lammps.sh",
                allow_module_level=True)  # fmt: skip

from lammps_interface import harness  # noqa: E402
from lammps_interface.mliap_unified import safe_deck_lines  # noqa: E402
from mace_gaunt_plugin.testing import default_dtype, small_mace_config  # noqa: E402

pytestmark = pytest.mark.lammps
RTOL = 1e-10

DECK = """\
units metal
atom_style atomic
atom_modify map array
boundary p p p
lattice fcc 3.61
region box block 0 2 0 2 0 2
create_box 2 box
create_atoms 1 box
set type 1 type/fraction 2 0.25 4711
mass 1 15.999
mass 2 63.546
displace_atoms all random 0.08 0.08 0.08 87287 units box
{load}pair_coeff * * O Cu
thermo_style custom step pe
run 0
print "MGP_PE $(pe:%.17g) $(lx:%.17g) $(ly:%.17g) $(lz:%.17g)"
write_dump all custom out.dump id type x y z fx fy fz modify sort id format float %.17g
"""


def _lmp(workdir: Path, model: str, force_env: bool) -> subprocess.CompletedProcess:
    lmp = harness.find_lmp()
    assert lmp, "no lmp executable: build_lammps.sh links it next to this Python"
    (workdir / "in.safe").write_text(DECK.format(load=safe_deck_lines(model)))
    env = harness.lmp_env()
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    if force_env:
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    return subprocess.run([lmp, "-in", "in.safe", "-log", "none", "-nocite"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def safe_file(tmp_path_factory) -> Path:
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        model = mgp.build_model("grid", **small_mace_config(atomic_numbers=(8, 29), r_max=4.5))
    path = tmp_path_factory.mktemp("lmp_safe") / "grid.safetensors"
    mgp.save_model(model, path)
    return path


def test_deck_loads_a_safe_file_and_matches_ase(safe_file: Path, tmp_path: Path) -> None:
    from ase import Atoms

    res = _lmp(tmp_path, str(safe_file), force_env=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    pe, lx, ly, lz = (float(v) for v in next(l for l in res.stdout.splitlines() if l.startswith("MGP_PE")).split()[1:])
    rows = np.loadtxt(tmp_path / "out.dump", skiprows=9)
    symbols = ["O" if int(t) == 1 else "Cu" for t in rows[:, 1]]
    assert 0 < symbols.count("O") < len(symbols)  # both types present, in a non-atomic-number order
    atoms = Atoms(symbols, positions=rows[:, 2:5], cell=[lx, ly, lz], pbc=True)
    atoms.calc = mgp.safe_calculator(safe_file, device="cpu", default_dtype="float64")
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert abs(pe - energy) <= RTOL * abs(energy), (pe, energy)
    assert harness.max_relative_error(rows[:, 5:8], forces) < RTOL


@pytest.mark.parametrize("force_env", [True, False], ids=["env-set", "env-unset"])
def test_deck_never_runs_a_payload(force_env: bool, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payload = tmp_path / "evil.safetensors"
    code = (
        "import sys, torch\n"
        "class P:\n"
        "    def __reduce__(self):\n"
        "        return (open, (sys.argv[1], 'w'))\n"
        "torch.save({'model': P()}, sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(marker), str(payload)], check=True, timeout=300)
    res = _lmp(tmp_path, str(payload), force_env=force_env)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "not a readable safetensors file" in out, out[-3000:]
    assert not marker.exists()
