"""LAMMPS ``pair_style mliap unified`` on two MPI ranks (``mpirun -np 2``), float64, every
registered TP backend and the torchscript and aotinductor engines: energy, per-atom
energies, forces and virial with processor grids 2x1x1 and 1x2x1 equal the single-rank
run and the ASE ``MACECalculator`` to 1e-10 relative, on (a) a periodic fcc Cu box whose subdomains (5.4 A) are thinner than the
model's receptive field (2 x r_max = 10 A) and (b) a small triclinic cell (every length
< r_max), on the pruned graph (own images mapped to local atoms, layers pruned by hop depth;
the timing file shows it); NVE under two ranks conserves energy; a too-thin ghost shell, missing ghost
neighbour lists, an unknown element and a missing attach stop the run with a message.

Needs LAMMPS built with MPI (``bash lammps_interface/build_lammps.sh``, the default) and
``mpirun``; skipped with the reason otherwise, except in CI (``CI`` set), where a missing
piece is an error."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import mace_gaunt_plugin as mgp


def _missing() -> str | None:
    """Why these tests cannot run here, or None."""
    try:
        from lammps import lammps
    except ImportError as exc:
        return f"LAMMPS Python module not installed ({exc}); build it with bash lammps_interface/build_lammps.sh"
    if not (shutil.which("mpirun") or shutil.which("mpiexec")):
        return "no mpirun on PATH (build_lammps.sh installs openmpi-bin)"
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        if not lmp.has_mpi_support:
            return "this LAMMPS was built without MPI (build_lammps.sh --serial); rebuild without --serial"
    finally:
        lmp.close()
    return None


_WHY = _missing()
if _WHY is not None:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise RuntimeError(f"CI is set but the MPI LAMMPS tests cannot run: {_WHY}")
    pytest.skip(_WHY, allow_module_level=True)

from _lammps_models import exported_model  # noqa: E402
from lammps_interface import INPUT_DECK_LINES, harness  # noqa: E402
from lammps_interface._errors import LAMMPSInterfaceError  # noqa: E402
from test_lammps import _fcc_cu, _triclinic  # noqa: E402  (the structures of the one-rank tests)

pytestmark = pytest.mark.lammps

RTOL = 1e-10
BACKENDS = mgp.available_backends()
GRIDS = ("2 1 1", "1 2 1")
#: the TorchScript core (the default) and the one compiled ahead of time
ENGINES = ("torchscript", "aotinductor")
KEYS = ("energy", "energies", "forces", "virial")
#: n_interactions x r_max of the standard test model, plus the default metal skin
COMM_CUTOFF = 2 * 5.0 + 2.0


def _structures() -> dict[str, tuple]:
    tri = _triclinic()
    cu = _fcc_cu()
    # the point of (a): each rank's slab is thinner than what one atom's energy sees
    assert cu.cell.lengths()[0] / 2 < 2 * 5.0 and max(tri.cell.lengths()) < 5.0
    return {"fcc_cu_108": (cu, ["Cu"]), "triclinic_self_images": (tri, ["Cu", "O"])}


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory) -> dict[tuple[str, str, str], dict]:
    """(backend, structure, grid, engine) -> the two-rank result; every case in one mpirun."""
    keys, cases = [], []
    for backend, engine in [(b, e) for b in BACKENDS for e in ENGINES]:
        _, model_file = exported_model(backend, engine=engine)
        for name, (atoms, elements) in _structures().items():
            for grid in GRIDS:
                keys.append((backend, name, grid, engine))
                cases.append(
                    {
                        "kind": "single_point",
                        "model_file": str(model_file),
                        "atoms": harness.atoms_spec(atoms),
                        "elements": elements,
                        "setup": {"processors": grid, "comm_cutoff": COMM_CUTOFF, "ghost_lists": True},
                    }
                )
    results = harness.run_mpi(cases, 2, str(tmp_path_factory.mktemp("mpi")), timeout=1200)
    assert all(r["ranks"] == 2 for r in results)
    return dict(zip(keys, results))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("structure", ["fcc_cu_108", "triclinic_self_images"])
def test_two_ranks_match_one_rank_and_ase(backend: str, structure: str, engine: str, two_rank_results) -> None:
    model_path, model_file = exported_model(backend, engine=engine)
    atoms, elements = _structures()[structure]
    ref = harness.ase_reference(str(model_path), atoms)
    one = harness.single_point(str(model_file), atoms, elements)
    for grid in GRIDS:
        got = two_rank_results[(backend, structure, grid, engine)]
        for key in KEYS:
            for name, want in (("one rank", one[key]), ("ASE", ref[key])):
                err = harness.max_relative_error(got[key], want)
                assert err < RTOL, f"{grid} grid, {key} vs {name}: max relative deviation {err:.2e}"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_ghost_route_on_one_rank(backend: str, engine: str, monkeypatch) -> None:
    """The several-ranks route (graph over local + ghost atoms) forced on one rank equals
    ASE too (triclinic: every atom sees its own images as ghosts)."""
    monkeypatch.setenv("MGP_LAMMPS_PLAIN_PATH", "ghosts")
    model_path, model_file = exported_model(backend, engine=engine)
    atoms, elements = _structures()["triclinic_self_images"]
    ref = harness.ase_reference(str(model_path), atoms)
    got = harness.single_point(str(model_file), atoms, elements, comm_cutoff=COMM_CUTOFF, ghost_lists=True)
    for key in KEYS:
        err = harness.max_relative_error(got[key], ref[key])
        assert err < RTOL, f"{key}: max relative deviation {err:.2e}"


def test_two_ranks_prune_the_graph(tmp_path, monkeypatch) -> None:
    """The timing file of a two-rank run shows the pruned graph: the last layer updates
    each rank's local atoms only (together every atom once), the first layer also the
    atoms within one hop, and the first layer reads under a third of the atoms in the 12 A
    ghost shell that each rank's graph held before pruning (a 5.4 A slab of a 10.8 A box)."""
    from lammps_interface._timing import read_layer_counts

    monkeypatch.setenv("MGP_LAMMPS_TIMING", str(tmp_path / "t"))
    _, model_file = exported_model(BACKENDS[0])
    atoms, elements = _structures()["fcc_cu_108"]
    case = {"kind": "single_point", "model_file": str(model_file), "atoms": harness.atoms_spec(atoms),
            "elements": elements, "setup": {"processors": "2 1 1", "comm_cutoff": COMM_CUTOFF, "ghost_lists": True}}
    harness.run_mpi([case], 2, str(tmp_path), timeout=600)
    counts = [read_layer_counts(tmp_path / f"t.rank{r}")[-1] for r in range(2)]
    assert sum(rank[-1][1] for rank in counts) == len(atoms), counts
    for (read1, updated1, edges1), (read2, updated2, edges2) in counts:
        assert read2 == updated1 and updated2 < updated1 < read1 and edges2 < edges1, counts
    length = atoms.cell.lengths()[0]  # cubic box
    shell = len(atoms) / length**3 * (length / 2 + 2 * COMM_CUTOFF) * (length + 2 * COMM_CUTOFF) ** 2
    assert max(rank[0][0] for rank in counts) < shell / 3, (counts, shell)  # the unpruned graph: every atom of the shell


def test_nve_energy_drift_two_ranks(tmp_path) -> None:
    """1000 steps of 1 fs NVE of 32 fcc Cu atoms over a 2x1x1 grid (3.6 A slabs; a tiny
    two-layer model with r_max 3, so a ghost cutoff of 6 A plus the 2 A skin; atoms move
    between ranks): total-energy drift below 1e-5 eV/atom."""
    from ase.build import bulk

    _, model_file = exported_model(BACKENDS[0], "tiny_r3")
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=5)
    atoms.wrap()
    case = {
        "kind": "nve",
        "model_file": str(model_file),
        "atoms": harness.atoms_spec(atoms),
        "elements": ["Cu"],
        "setup": {"processors": "2 1 1", "comm_cutoff": 8.0, "ghost_lists": True},
        "run": {"steps": 1000, "chunk": 100},
    }
    (res,) = harness.run_mpi([case], 2, str(tmp_path), timeout=600)
    n, energies = len(atoms), list(res["energies"])
    drift = abs(energies[-1] - res["e0"]) / n
    spread = (max(energies + [res["e0"]]) - min(energies + [res["e0"]])) / n
    assert res["ke"] > 0.01 * n * 0.0259 / 2, "atoms did not move"
    assert drift < 1e-5, f"NVE drift {drift:.2e} eV/atom over 1000 steps on 2 ranks"
    assert spread < 1e-4, f"NVE energy spread {spread:.2e} eV/atom"


# ------------------------------------------------------ errors under mpirun
DECK = """\
units metal
atom_style atomic
boundary p p p
processors 2 1 1
lattice fcc 3.61
region box block 0 3 0 3 0 3
create_box 1 box
create_atoms 1 box
mass 1 63.546
displace_atoms all random 0.05 0.05 0.05 87287 units box
{comm}{attach}pair_style mliap unified {model} {ghosts}
pair_coeff * * {element}
run 0
"""


def _run_two_ranks(tmp_path: Path, comm: str = f"comm_modify cutoff {COMM_CUTOFF}\n", attach: bool = True,
                   element: str = "Cu", ghosts: int = 1) -> subprocess.CompletedProcess:
    _, model_file = exported_model(BACKENDS[0])
    deck = tmp_path / "in.mpi"
    deck.write_text(DECK.format(comm=comm, attach=INPUT_DECK_LINES if attach else "", model=model_file,
                                ghosts=ghosts, element=element))
    lmp = harness.find_lmp()
    assert lmp, "no lmp executable: build_lammps.sh links it into the environment's bin/"
    cmd = harness.mpirun_command(2) + [lmp, "-in", str(deck), "-log", "none", "-nocite"]
    env = harness.lmp_env({"OMP_NUM_THREADS": "1"})
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def _assert_stops(res: subprocess.CompletedProcess, *needles: str) -> str:
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "ERROR" in out, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in output:\n{out[-3000:]}"
    assert "Loop time" not in out, "the run went on"
    return out


def test_two_ranks_standalone_run(tmp_path) -> None:
    """The deck the errors below break runs on two ranks."""
    res = _run_two_ranks(tmp_path)
    assert res.returncode == 0 and "Loop time of" in res.stdout and "on 2 procs" in res.stdout, (
        res.stdout[-3000:] + res.stderr[-3000:]
    )


def test_error_ghost_shell_too_thin(tmp_path) -> None:
    out = _assert_stops(_run_two_ranks(tmp_path, comm=""), "ghost-atom shell is too thin", "comm_modify cutoff 12")
    assert "ERROR on proc 0" in out and "ERROR on proc 1" in out, out[-3000:]  # each rank reports it


def test_error_no_ghost_lists(tmp_path) -> None:
    _assert_stops(_run_two_ranks(tmp_path, ghosts=0), "pair_style mliap unified MODEL_FILE 1")


def test_error_unknown_element(tmp_path) -> None:
    out = _assert_stops(_run_two_ranks(tmp_path, element="Fe"), "Fe", "model does not know", "H, C, N, O, Cu")
    assert "ERROR on proc 0" in out and "ERROR on proc 1" in out, out[-3000:]


def test_error_no_lammps_handle(tmp_path) -> None:
    """No rank has the instance: every rank reports it (Python's traceback on each rank),
    then LAMMPS stops all of them together."""
    out = _assert_stops(_run_two_ranks(tmp_path, attach=False), "attach_lammps", "python mgp_attach")
    assert out.count("needs the running LAMMPS instance") >= 2, out[-3000:]


def test_ids_route_refuses_several_ranks(monkeypatch) -> None:
    """MGP_LAMMPS_PLAIN_PATH=ids (ghosts mapped to local atoms) needs one rank."""
    from lammps_interface.mliap_unified import _plain_path

    monkeypatch.delenv("MGP_LAMMPS_PLAIN_PATH", raising=False)
    assert _plain_path(1) == "ids" and _plain_path(2) == "ghosts"
    monkeypatch.setenv("MGP_LAMMPS_PLAIN_PATH", "ids")
    with pytest.raises(LAMMPSInterfaceError, match="needs one MPI rank"):
        _plain_path(2)
    monkeypatch.setenv("MGP_LAMMPS_PLAIN_PATH", "sideways")
    with pytest.raises(LAMMPSInterfaceError, match="must be one of"):
        _plain_path(1)
