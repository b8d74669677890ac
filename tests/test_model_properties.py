"""Physical and export properties of a full ScaleShiftMACE, for EVERY registered backend.

Parametrised over :func:`mace_gaunt_plugin.available_backends`, so a newly registered
backend is tested here with no edit. float64, small model, 3BPA configurations.
"""

from __future__ import annotations

import copy
import json
import subprocess
import textwrap
from typing import Any

import numpy as np
import pytest
import torch
from e3nn.util import jit
from mace import modules

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.testing import atoms_to_batch, default_dtype, model_energy_forces, random_orthogonal, small_mace_config

BACKENDS = mgp.available_backends()
ATOL = 1e-10


def _build(backend: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    cfg = small_mace_config(**overrides)
    torch.manual_seed(seed)
    with default_dtype(torch.float64):
        return mgp.build_model(backend, **cfg)


def _batch(atoms_list: list) -> dict[str, torch.Tensor]:
    cfg = small_mace_config()
    with default_dtype(torch.float64):
        return atoms_to_batch(atoms_list, cfg["atomic_numbers"], cfg["r_max"])


@pytest.fixture(scope="module")
def molecule(data_3bpa):
    import ase.io

    return ase.io.read(data_3bpa / "train_mixedT.xyz", "7")


_MODELS: dict[str, torch.nn.Module] = {}


def _model(name: str) -> torch.nn.Module:
    """One float64 model per backend for the whole module (e3nn's takes seconds to build)."""
    if name not in _MODELS:
        _MODELS[name] = _build(name)
    return _MODELS[name]


@pytest.fixture(params=BACKENDS)
def model(request) -> tuple[str, torch.nn.Module]:
    return request.param, _model(request.param)


def test_every_backend_is_tested() -> None:
    assert {"e3nn", "grid"} <= set(BACKENDS)


def test_o3_translation_and_permutation(model, molecule) -> None:
    name, net = model
    rots = [random_orthogonal(1, False), random_orthogonal(2, False), random_orthogonal(3, True)]
    variants = [molecule.copy()]
    for r in rots:
        a = molecule.copy()
        a.positions = molecule.positions @ r.numpy().T
        variants.append(a)
    shifted = molecule.copy()
    shifted.positions += np.array([3.1, -7.2, 0.4])
    variants.append(shifted)
    perm = np.random.default_rng(0).permutation(len(molecule))
    variants.append(molecule[perm])
    energy, forces = model_energy_forces(net, _batch(variants))
    n = len(molecule)
    f = forces.detach().reshape(len(variants), n, 3)
    e = energy.detach()
    assert torch.isfinite(e).all() and f.abs().max() > 1e-6, f"{name}: degenerate model output"
    for k, r in enumerate(rots, start=1):
        torch.testing.assert_close(e[k], e[0], rtol=0, atol=ATOL, msg=f"{name}: energy not O(3)-invariant")
        torch.testing.assert_close(f[k], f[0] @ r.T, rtol=0, atol=ATOL, msg=f"{name}: forces not O(3)-equivariant")
    torch.testing.assert_close(e[4], e[0], rtol=0, atol=ATOL)
    torch.testing.assert_close(f[4], f[0], rtol=0, atol=ATOL)
    torch.testing.assert_close(e[5], e[0], rtol=0, atol=ATOL)
    torch.testing.assert_close(f[5], f[0][torch.from_numpy(perm)], rtol=0, atol=ATOL)


def test_forces_are_minus_energy_gradient(model, molecule) -> None:
    name, net = model
    h = 1e-4
    picks = [(0, 0), (5, 1), (17, 2)]
    variants = [molecule.copy()]
    for atom, axis in picks:
        for sign in (1, -1):
            a = molecule.copy()
            a.positions[atom, axis] += sign * h
            variants.append(a)
    energy, forces = model_energy_forces(net, _batch(variants))
    e = energy.detach()
    for j, (atom, axis) in enumerate(picks):
        fd = -(e[1 + 2 * j] - e[2 + 2 * j]) / (2 * h)
        torch.testing.assert_close(forces[atom, axis].detach(), fd, rtol=1e-6, atol=1e-6, msg=f"{name}: F != -dE/dx")


def test_torchscript_matches_eager(model, molecule) -> None:
    name, net = model
    batch = _batch([molecule])
    e0, f0 = model_energy_forces(net, batch)
    scripted = jit.compile(copy.deepcopy(net))
    e1, f1 = model_energy_forces(scripted, batch)
    torch.testing.assert_close(e1, e0, rtol=0, atol=ATOL)
    torch.testing.assert_close(f1, f0, rtol=0, atol=ATOL)
    assert mgp.backend_of(scripted) == name


LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import mace  # sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    import mace_gaunt_plugin as mgp
    torch.set_default_dtype(torch.float64)
    batch = torch.load(sys.argv[1], weights_only=False)
    result = {}
    for path in sys.argv[2:]:
        try:
            model = torch.load(path, weights_only=False)
            out = model(dict(batch), training=False, compute_force=False)
            result[path] = {"energy": out["energy"].tolist(), "backend": mgp.backend_of(model)}
        except Exception as exc:  # reported per backend by the test
            result[path] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def reloaded(molecule, tmp_path_factory, python) -> dict[str, Any]:
    """Every backend's model saved with torch.save and evaluated in ONE fresh interpreter
    (one interpreter start instead of one per backend)."""
    tmp = tmp_path_factory.mktemp("reload")
    batch = _batch([molecule])
    torch.save(batch, tmp / "batch.pt")
    paths = {}
    for name in BACKENDS:
        paths[name] = str(tmp / f"{name}.pt")
        torch.save(_model(name), paths[name])
    proc = subprocess.run([python, "-c", LOAD_SCRIPT, str(tmp / "batch.pt"), *paths.values()], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"fresh interpreter failed to load the saved models:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: out[path] for name, path in paths.items()} | {"_batch": batch}


def test_save_load_in_fresh_process(model, reloaded) -> None:
    name, net = model
    energy, _ = model_energy_forces(net, reloaded["_batch"])
    assert "error" not in reloaded[name], reloaded[name].get("error")
    assert reloaded[name]["backend"] == name
    np.testing.assert_allclose(reloaded[name]["energy"], energy.detach().numpy(), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- grid specifics


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_grid_has_fewer_parameters_than_e3nn() -> None:
    e3nn = _n_params(_model("e3nn"))
    for mode in ("l2", "l1l2"):
        with default_dtype(torch.float64):
            grid = _n_params(mgp.build_model("grid", backend_options={"conv_weights": mode}, **small_mace_config()))
        assert grid < e3nn, (mode, grid, e3nn)


@pytest.mark.parametrize("interaction", sorted(modules.interaction_classes))
def test_grid_builds_every_interaction_class(interaction, molecule) -> None:
    net = _build("grid", interaction=interaction)
    convs = [type(block.conv_tp).__name__ for block in net.interactions]
    assert convs == ["SphereConv"] * len(convs), convs
    energy, forces = model_energy_forces(net, _batch([molecule]))
    assert torch.isfinite(energy).all() and torch.isfinite(forces).all()
