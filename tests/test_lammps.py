"""LAMMPS ``pair_style mliap unified`` against the ASE ``MACECalculator``, for a model
with every registered TP backend (float64): energy, per-atom energies, forces and
virial agree to 1e-8 relative on (a) fcc Cu with displaced atoms, (b) a small triclinic
cell whose atoms see their own images, (c) a 3BPA molecule in a non-periodic box; NVE
conserves energy; the cases the wrapper cannot do fail with a clear message.

Needs the LAMMPS Python module built by ``lammps_interface/build_lammps.sh``. In CI
(``CI`` set) a missing module is an error, never a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import mace_gaunt_plugin as mgp

try:
    from lammps import lammps, mliap  # noqa: F401  (the module this file needs)
except ImportError as exc:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI is set but the LAMMPS Python module is missing: .ci/run must run "
            "bash lammps_interface/build_lammps.sh before the tests"
        ) from exc
    pytest.skip(
        f"LAMMPS Python module not installed ({exc}); build it with bash lammps_interface/build_lammps.sh",
        allow_module_level=True,
    )

from _lammps_models import R_MAX, exported_model  # noqa: E402
from lammps_interface import harness  # noqa: E402

pytestmark = pytest.mark.lammps

RTOL = 1e-8
BACKENDS = mgp.available_backends()


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def models() -> dict[str, tuple[Path, Path]]:
    """backend -> (eager .model path, exported LAMMPS file)."""
    return {backend: exported_model(backend) for backend in BACKENDS}


def _new_lammps():
    return harness.new_lammps()


def _assert_close(name: str, got, ref) -> None:
    err = harness.max_relative_error(got, ref)
    assert err < RTOL, f"{name}: max relative deviation {err:.2e}"


# -------------------------------------------------------------- structures
def _fcc_cu():
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)  # 108 atoms
    atoms.rattle(0.08, seed=3)
    atoms.wrap()
    return atoms


def _triclinic():
    from ase import Atoms

    cell = np.array([[3.9, 0.0, 0.0], [1.3, 3.7, 0.0], [-0.9, 1.1, 4.1]])  # every length < r_max
    frac = np.array([[0.05, 0.1, 0.2], [0.55, 0.45, 0.6], [0.3, 0.8, 0.85]])
    atoms = Atoms("CuOCu", scaled_positions=frac, cell=cell, pbc=True)
    return atoms


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("structure", ["fcc_cu_108", "triclinic_self_images", "bpa_molecule"])
def test_lammps_matches_ase(backend: str, structure: str, models, bpa_atoms) -> None:
    model_path, model_file = models[backend]
    if structure == "fcc_cu_108":
        atoms, elements = _fcc_cu(), ["Cu"]
    elif structure == "triclinic_self_images":
        atoms, elements = _triclinic(), ["Cu", "O"]
        assert min(atoms.cell.lengths()) < R_MAX  # the point of this case
    else:
        atoms, elements = bpa_atoms[0].copy(), ["C", "H", "N", "O"]
        atoms.pbc = False
    ref = harness.ase_reference(str(model_path), atoms)
    got = harness.single_point(str(model_file), atoms, elements)
    for key in ("energy", "energies", "forces", "virial"):
        _assert_close(key, got[key], ref[key])


@pytest.mark.parametrize("engine", ["eager", "aotinductor"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("structure", ["fcc_cu_108", "triclinic_self_images"])
def test_other_engines_match_ase(backend: str, structure: str, engine: str) -> None:
    """``--engine eager`` runs the same core without TorchScript, ``--engine
    aotinductor`` the core compiled ahead of time: same exactness."""
    from lammps_interface import load_model_file

    model_path, model_file = exported_model(backend, engine=engine)
    wrapper = load_model_file(str(model_file))
    assert wrapper.engine == engine and not isinstance(wrapper._core, torch.jit.ScriptModule)
    atoms, elements = (_fcc_cu(), ["Cu"]) if structure == "fcc_cu_108" else (_triclinic(), ["Cu", "O"])
    ref = harness.ase_reference(str(model_path), atoms)
    got = harness.single_point(str(model_file), atoms, elements)
    for key in ("energy", "energies", "forces", "virial"):
        _assert_close(key, got[key], ref[key])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nve_energy_drift(backend: str) -> None:
    """1000 steps of 1 fs NVE on (a): total-energy drift below 1e-5 eV/atom (a tiny model,
    to keep the run short)."""
    _, model_file = exported_model(backend, "tiny")
    atoms = _fcc_cu()
    res = harness.nve_drift(str(model_file), atoms, ["Cu"], steps=1000, chunk=100)
    e0, energies, ke = res["e0"], res["energies"], res["ke"]
    n = len(atoms)
    drift = abs(energies[-1] - e0) / n
    spread = (max(energies + [e0]) - min(energies + [e0])) / n
    assert ke > 0.01 * n * 0.0259 / 2, "atoms did not move"
    assert drift < 1e-5, f"NVE drift {drift:.2e} eV/atom over 1000 steps"
    assert spread < 1e-4, f"NVE energy spread {spread:.2e} eV/atom"


# ---------------------------------------------------- standalone lmp -in
LMP = harness.find_lmp()

DECK = """\
units metal
atom_style atomic
boundary p p p
lattice fcc 3.61
region box block 0 2 0 2 0 2
create_box 1 box
create_atoms 1 box
mass 1 63.546
displace_atoms all random 0.05 0.05 0.05 87287 units box
{attach}pair_style mliap unified {model} 0
pair_coeff * * {element}
thermo_style custom step pe press
run {steps}
print "MGP_PE $(pe:%.16e)"
"""


def _run_lmp(
    tmp_path: Path, model: str, element: str = "Cu", attach: bool = True, steps: int = 0, env_extra: dict | None = None
) -> subprocess.CompletedProcess:
    from lammps_interface import INPUT_DECK_LINES

    deck = tmp_path / "in.test"
    deck.write_text(DECK.format(attach=INPUT_DECK_LINES if attach else "", model=model, element=element, steps=steps))
    if LMP is None:
        pytest.fail("no lmp executable on PATH: build_lammps.sh links it into the environment's bin/")
    env = harness.lmp_env(env_extra)
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # the file must load without it
    return subprocess.run(
        [LMP, "-in", str(deck), "-log", "none", "-nocite"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )


def test_standalone_lmp_run(models, tmp_path) -> None:
    """``lmp -in`` (no Python driver, no TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) loads the
    exported file and gives the energy the Python driver gives."""
    backend = BACKENDS[0]
    _, model_file = models[backend]
    res = _run_lmp(tmp_path, str(model_file))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    pe = float(next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("MGP_PE")))
    lmp = _new_lammps()
    try:
        lmp.commands_string(DECK.format(attach="", model=model_file, element="Cu", steps=0).replace('print "MGP_PE $(pe:%.16e)"', ""))
        ref = lmp.last_thermo()["PotEng"]
    finally:
        lmp.close()
    assert abs(pe - ref) <= RTOL * abs(ref)


def test_wrapper_timing(models, tmp_path) -> None:
    """``MGP_LAMMPS_TIMING=PATH`` writes one ``total model`` line per force call (setup
    plus each step), the model call inside the whole call, and changes no result."""
    from lammps_interface._timing import read_timings

    _, model_file = models[BACKENDS[0]]
    pes = []
    for timing in (None, tmp_path / "timing.txt"):
        extra = {} if timing is None else {"MGP_LAMMPS_TIMING": str(timing)}
        res = _run_lmp(tmp_path, str(model_file), steps=2, env_extra=extra)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        pes.append(float(next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("MGP_PE"))))
    assert pes[0] == pes[1]
    calls = read_timings(tmp_path / "timing.txt")
    assert len(calls) == 3
    assert all(0.0 < model <= total for total, model in calls)


def test_mliap_memory_is_linear_in_pairs(tmp_path) -> None:
    """LAMMPS 4 Jul 2026 sized ML-IAP's copy of the neighbour list as atoms x *all* pairs of
    the rank (1.15 GB for 4000 Cu atoms, a failed 74 GB allocation for 32,000); the build's
    patch sizes it atoms x the most pairs of one atom. 2048 atoms with 18 neighbours each
    (r_max 4): the quadratic array alone would be 2048 x 36,864 x 4 B = 302 MB per rank,
    which LAMMPS' own count ("Per MPI rank memory allocation") would show."""
    from lammps_interface import INPUT_DECK_LINES

    _, model_file = exported_model(BACKENDS[0], "tiny")
    deck = DECK.replace("block 0 2 0 2 0 2", "block 0 8 0 8 0 8")
    assert deck != DECK
    (tmp_path / "in.test").write_text(deck.format(attach=INPUT_DECK_LINES, model=model_file, element="Cu", steps=0))
    res = subprocess.run([LMP, "-in", "in.test", "-log", "none", "-nocite"], cwd=tmp_path, env=harness.lmp_env(),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Created 2048 atoms" in res.stdout
    line = next(line for line in res.stdout.splitlines() if line.startswith("Per MPI rank memory allocation"))
    mbytes = float(line.split("=")[1].split("|")[-1].split()[0])
    quadratic = 2048 * 2048 * 18 * 4 / 2**20
    assert mbytes < quadratic / 4, f"{line} (atoms x all pairs would be {quadratic:.0f} MB)"


def test_md_step_timing_of_the_converged_study(data_3bpa) -> None:
    """``benchmarks/_md_step.py`` (the converged study's inference cost): exports a model,
    runs the 729-atom 3BPA box in LAMMPS on one thread and reports the timed steps."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "_md_step.py"
    spec = importlib.util.spec_from_file_location("_bench_md_step", path)
    md = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(md)
    model, _ = exported_model(BACKENDS[0])
    res = md.md_step_ms(model, data_3bpa, steps=2, warmup=1)
    assert res["md_atoms"] == 729 and res["md_steps"] == 2 and res["md_procs"] == 1 and res["md_threads"] == "1"
    assert res["md_ms_per_step"] > 0


def _assert_fails(res: subprocess.CompletedProcess, *needles: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "ERROR" in out, out[-3000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in output:\n{out[-3000:]}"


def test_error_unknown_element(models, tmp_path) -> None:
    _, model_file = models[BACKENDS[0]]
    _assert_fails(_run_lmp(tmp_path, str(model_file), element="Fe"), "Fe", "model does not know", "H, C, N, O, Cu")


def test_malloc_mode_changes_no_result_and_a_bad_one_stops(models, tmp_path) -> None:
    """``MGP_LAMMPS_MALLOC`` (the wrapper's glibc malloc settings): ``keep`` (the default)
    and ``default`` give the same energies; an unknown value stops the run with a message."""
    _, model_file = models[BACKENDS[0]]
    pes = []
    for mode in ("keep", "default"):
        res = _run_lmp(tmp_path, str(model_file), steps=2, env_extra={"MGP_LAMMPS_MALLOC": mode})
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        pes.append(float(next(line.split()[1] for line in res.stdout.splitlines() if line.startswith("MGP_PE"))))
    assert pes[0] == pes[1]
    bad = _run_lmp(tmp_path, str(model_file), env_extra={"MGP_LAMMPS_MALLOC": "jemalloc"})
    _assert_fails(bad, "MGP_LAMMPS_MALLOC must be one of", "'jemalloc'")


def test_error_missing_model_file(tmp_path) -> None:
    _assert_fails(_run_lmp(tmp_path, str(tmp_path / "missing.mliap")), "No such file", "missing.mliap")


def test_error_corrupt_model_file(models, tmp_path) -> None:
    _, model_file = models[BACKENDS[0]]
    blob = bytearray(model_file.read_bytes())
    mid = len(blob) // 2
    blob[mid : mid + 64] = bytes(64)  # damage the middle (inside the TorchScript bytes)
    bad = tmp_path / "corrupt.mliap"
    bad.write_bytes(bytes(blob))
    _assert_fails(_run_lmp(tmp_path, str(bad)), "corrupt")
    truncated = tmp_path / "truncated.mliap"
    truncated.write_bytes(model_file.read_bytes()[:1000])
    _assert_fails(_run_lmp(tmp_path, str(truncated)), "truncated")


def test_error_no_lammps_handle(models, tmp_path) -> None:
    _, model_file = models[BACKENDS[0]]
    _assert_fails(_run_lmp(tmp_path, str(model_file), attach=False), "attach_lammps", "python mgp_attach")


def test_export_cli(models, tmp_path) -> None:
    """The console script writes a loadable file and refuses names LAMMPS would torch.load."""
    model_path, _ = models[BACKENDS[0]]
    exe = shutil.which("mace_gaunt_create_lammps_model")
    assert exe, "console script not installed (pip install -e .)"
    out = tmp_path / "cli.mliap"
    res = subprocess.run([exe, str(model_path), "-o", str(out), "--dtype", "float32"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "pair_style mliap unified" in res.stdout and out.exists()
    from lammps_interface import load_model_file

    wrapper = load_model_file(str(out))
    assert wrapper.dtype == "float32" and wrapper.engine == "torchscript"
    assert isinstance(wrapper._core, torch.jit.ScriptModule)
    eager_out = tmp_path / "cli_eager.mliap"
    res = subprocess.run([exe, str(model_path), "-o", str(eager_out), "--engine", "eager"], capture_output=True, text=True)
    assert res.returncode == 0 and "engine='eager'" in res.stdout, res.stderr[-3000:]
    res = subprocess.run([exe, str(model_path), "-o", str(tmp_path / "x.pt")], capture_output=True, text=True)
    assert res.returncode == 2 and "torch.load" in res.stderr
