"""Small helpers to drive LAMMPS with an exported model from Python: single points
compared with the ASE ``MACECalculator``, and the environment for a standalone
``lmp -in`` run. Used by the tests, the GPU check and the examples."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

__all__ = [
    "find_lmp",
    "lmp_env",
    "new_lammps",
    "setup_structure",
    "single_point",
    "ase_reference",
    "max_relative_error",
]


def find_lmp() -> Optional[str]:
    """The ``lmp`` executable: next to this Python (build_lammps.sh links it there), else on PATH."""
    here = Path(sys.executable).parent / "lmp"
    return str(here) if here.exists() else shutil.which("lmp")


def lmp_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Environment for a standalone ``lmp`` whose embedded Python must import what this
    Python imports (torch, mace, this package): its sys.path goes into PYTHONPATH."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    paths.append(sysconfig.get_paths()["purelib"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def new_lammps(screen: bool = False) -> Any:
    """A LAMMPS instance with the ML-IAP Python coupling active and attached to the wrapper."""
    from lammps import lammps, mliap

    from .mliap_unified import attach_lammps

    args = ["-log", "none", "-nocite"] + ([] if screen else ["-screen", "none"])
    lmp = lammps(cmdargs=args)
    mliap.activate_mliappy(lmp)
    attach_lammps(lmp)
    return lmp


def setup_structure(lmp: Any, atoms: Any, model_file: str, elements: Sequence[str]) -> None:
    """Box, atoms (IDs 1..N in ASE order) and pair style for ``atoms``. A periodic cell
    must be in LAMMPS' lower-triangular form (a along x, b in the xy plane); a
    non-periodic one gets a fixed box 10 A larger on every side."""
    from ase.data import atomic_masses, atomic_numbers

    cell = np.asarray(atoms.cell).tolist()  # Python floats: their repr is exact and plain
    if atoms.pbc.all():
        if abs(cell[0][1]) + abs(cell[0][2]) + abs(cell[1][2]) > 0:
            raise ValueError("cell is not in LAMMPS' lower-triangular form")
        box = (
            f"region box prism 0 {cell[0][0]!r} 0 {cell[1][1]!r} 0 {cell[2][2]!r} "
            f"{cell[1][0]!r} {cell[2][0]!r} {cell[2][1]!r} units box"
        )
        boundary = "p p p"
    elif not atoms.pbc.any():
        lo, hi = (atoms.positions.min(0) - 10.0).tolist(), (atoms.positions.max(0) + 10.0).tolist()
        box = f"region box block {lo[0]!r} {hi[0]!r} {lo[1]!r} {hi[1]!r} {lo[2]!r} {hi[2]!r} units box"
        boundary = "f f f"
    else:
        raise ValueError("mixed periodicity is not handled by this helper")
    lmp.commands_string(
        f"""
        units metal
        atom_style atomic
        boundary {boundary}
        {box}
        create_box {len(elements)} box
        """
    )
    for t, el in enumerate(elements, start=1):
        lmp.command(f"mass {t} {float(atomic_masses[atomic_numbers[el]])!r}")
    types = [list(elements).index(s) + 1 for s in atoms.get_chemical_symbols()]
    n = len(atoms)
    lmp.create_atoms(n, list(range(1, n + 1)), types, atoms.positions.reshape(-1).tolist())
    if lmp.get_natoms() != n:
        raise RuntimeError(f"LAMMPS kept {lmp.get_natoms()} of {n} atoms (are they inside the cell?)")
    lmp.command(f"pair_style mliap unified {model_file} 0")
    lmp.command(f"pair_coeff * * {' '.join(elements)}")


def single_point(model_file: str, atoms: Any, elements: Sequence[str]) -> dict[str, Any]:
    """LAMMPS energy, per-atom energies, forces (ASE order) and virial W (eV; W = -stress * V
    for a periodic cell, sum_i x_i F_i for an isolated one) for ``atoms``."""
    lmp = new_lammps()
    try:
        setup_structure(lmp, atoms, model_file, elements)
        lmp.commands_string(
            """
            compute mgp_pea all pe/atom
            compute mgp_vir all pressure NULL virial
            thermo_style custom step pe vol c_mgp_vir[1] c_mgp_vir[2] c_mgp_vir[3] c_mgp_vir[4] c_mgp_vir[5] c_mgp_vir[6]
            run 0
            """
        )
        thermo = lmp.last_thermo()  # get_thermo() reads computes as 0 once the run is over
        pxx, pyy, pzz, pxy, pxz, pyz = (thermo[f"c_mgp_vir[{k}]"] for k in range(1, 7))
        ptensor = np.array([[pxx, pxy, pxz], [pxy, pyy, pyz], [pxz, pyz, pzz]])
        nlocal = lmp.extract_global("nlocal")
        order = np.argsort(np.asarray(lmp.numpy.extract_atom("id", nelem=nlocal)))
        result = {
            "energy": thermo["PotEng"],
            "energies": np.asarray(lmp.numpy.extract_compute("mgp_pea", 1, 1))[:nlocal][order].copy(),
            "forces": np.asarray(lmp.numpy.extract_atom("f", nelem=nlocal))[order].copy(),
            "virial": ptensor * thermo["Volume"] / lmp.extract_global("nktv2p"),
        }
    finally:
        lmp.close()
    return result


def ase_reference(model_path: str, atoms: Any, device: str = "cpu", dtype: str = "float64") -> dict[str, Any]:
    """The same quantities from ``mace.calculators.MACECalculator`` on the eager model."""
    from mace.calculators import MACECalculator

    atoms = atoms.copy()
    atoms.calc = MACECalculator(model_paths=str(model_path), device=device, default_dtype=dtype)
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    if atoms.pbc.all():
        virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
    else:  # isolated: W = sum_i x_i (x) F_i (translation-invariant since sum F = 0)
        virial = atoms.positions.T @ forces
    return {
        "energy": energy,
        "energies": np.asarray(atoms.calc.results["energies"]),  # per atom, E0 included
        "forces": forces,
        "virial": virial,
    }


def max_relative_error(got: Any, ref: Any) -> float:
    """max |got - ref| / max |ref|."""
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-300))
