"""MACE's own LAMMPS export (``mace_create_lammps_model MODEL``, the libtorch format that
``pair_style mace`` reads) keeps every backend: the TorchScript file it writes loads in a
process without this plugin and gives the eager model's energy, forces and virial.
Its ``--format mliap`` route converts to cuEquivariance and must refuse plugin models
without writing a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.testing import default_dtype, small_mace_config

BACKENDS = mgp.available_backends()

EVALUATE = textwrap.dedent(
    """
    import json, sys
    import torch
    import mace  # noqa: F401
    from ase.io import read
    from mace import data as mdata
    from mace.tools import torch_geometric, utils

    torch.set_default_dtype(torch.float64)
    atoms = read(sys.argv[2])
    z = utils.AtomicNumberTable([1, 6, 7, 8])
    ad = mdata.AtomicData.from_config(mdata.config_from_atoms(atoms), z_table=z, cutoff=float(sys.argv[3]))
    batch = next(iter(torch_geometric.dataloader.DataLoader([ad], batch_size=1))).to_dict()
    batch["positions"].requires_grad_(True)
    model = torch.jit.load(sys.argv[1])
    out = model(batch, torch.ones(len(atoms)), compute_virials=True)
    print(json.dumps({
        "energy": float(out["total_energy_local"]),
        "forces": out["forces"].tolist(),
        "virials": out["virials"].reshape(3, 3).tolist(),
        "plugin_imported": "mace_gaunt_plugin" in sys.modules,
    }))
    """
)


def _env_without_plugin() -> dict[str, str]:
    return {**os.environ, "MACE_GAUNT_PLUGIN_DISABLE": "1", "OMP_NUM_THREADS": "1"}


def _saved_model(backend: str, directory: Path) -> Path:
    """A float64 random-weight model with ``backend``, saved as MACE saves models."""
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        model = mgp.build_model(backend, **small_mace_config())
    path = directory / f"{backend}.model"
    torch.save(model, path)
    return path


def _create_lammps_model(model_path: Path, *options: str) -> subprocess.CompletedProcess:
    """MACE's own ``mace_create_lammps_model`` (the module its console script runs)."""
    return subprocess.run(
        [sys.executable, "-m", "mace.cli.create_lammps_model", str(model_path), *options],
        capture_output=True, text=True, env=_env_without_plugin(), timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def periodic_molecule(tmp_path_factory, bpa_atoms):
    """A 3BPA molecule in a periodic box with 3 A between images: edges cross the boundary."""
    atoms = bpa_atoms[0].copy()
    atoms.center(vacuum=1.5)
    atoms.pbc = True
    path = tmp_path_factory.mktemp("mace_export") / "bpa.xyz"
    atoms.write(path)
    return atoms, path


@pytest.mark.parametrize("backend", BACKENDS)
def test_libtorch_export_keeps_the_backend(backend, periodic_molecule, tmp_path) -> None:
    from mace.calculators import MACECalculator

    atoms, xyz = periodic_molecule
    model_path = _saved_model(backend, tmp_path)
    run = _create_lammps_model(model_path, "--dtype", "float64")
    exported = Path(f"{model_path}-lammps.pt")
    assert run.returncode == 0 and exported.is_file(), run.stderr[-3000:]

    ev = subprocess.run(
        [sys.executable, "-c", EVALUATE, str(exported), str(xyz), str(small_mace_config()["r_max"])],
        capture_output=True, text=True, env=_env_without_plugin(), timeout=600,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-3000:]
    got = json.loads(ev.stdout.strip().splitlines()[-1])
    assert got["plugin_imported"] is False

    calc = MACECalculator(model_paths=str(model_path), device="cpu", default_dtype="float64")
    ref = atoms.copy()
    ref.calc = calc
    energy, forces = ref.get_potential_energy(), ref.get_forces()
    virial = -ref.get_stress(voigt=False) * ref.get_volume()
    assert np.abs(forces).max() > 1e-3
    assert abs(got["energy"] - energy) <= 1e-9 * max(1.0, abs(energy))
    np.testing.assert_allclose(np.array(got["forces"]), forces, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.array(got["virials"]), virial, rtol=0, atol=1e-9)


@pytest.mark.parametrize("backend", [b for b in ("grid", "gaunt") if b in BACKENDS])
def test_mliap_format_of_mace_refuses_gaunt_family_models(backend, tmp_path) -> None:
    """MACE's ``--format mliap`` rebuilds the model for cuEquivariance; on a Gaunt-family
    model it must fail rather than write a file (ours: ``mace_gaunt_create_lammps_model``)."""
    run = _create_lammps_model(_saved_model(backend, tmp_path), "--format", "mliap")
    assert run.returncode != 0
    assert not list(tmp_path.glob("*mliap_lammps.pt"))
