"""Physical and export properties of a full ScaleShiftMACE, for EVERY registered backend.

The checks themselves are the conformance kit's
(:func:`mace_gaunt_plugin.testing.check_backend`, which third-party backend authors run
too); here they run for every backend :func:`mace_gaunt_plugin.available_backends`
lists, so a newly registered backend is tested with no edit. The empty-input checks run
in test_empty_inputs.py. Only what the kit cannot do in-process (loading a saved model
in a fresh interpreter) and grid specifics are written here.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import pytest
import torch
from mace import modules

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.testing import (
    CHECKS,
    atoms_to_batch,
    check_backend,
    default_dtype,
    model_energy_forces,
    small_mace_config,
    synthetic_molecule,
)

BACKENDS = mgp.available_backends()
EMPTY_CHECKS = ("empty", "zero_nodes")  # test_empty_inputs.py
KIT_CHECKS = tuple(c for c in CHECKS if c not in EMPTY_CHECKS)
#: What the kit must report for each built-in backend; every check not named passes.
SKIPPED = {
    "e3nn": {"switch"},  # no other backend's defaults compute MACE's CG function (grid/gaunt with conv_weights=path: test_conv_path_weights.py)
    "sparse": {"switch"},  # the only 'sparse-cg' backend
    "grid": set(),
    "gaunt": set(),
}


def _builtin_backends() -> set[str]:
    return {ep.name for ep in entry_points(group="mace_gaunt_plugin.backends") if ep.value.startswith("mace_gaunt_plugin.")}


def test_every_backend_is_tested() -> None:
    builtins = _builtin_backends()
    assert builtins == set(SKIPPED), f"built-in entry points {sorted(builtins)} vs the expectations here {sorted(SKIPPED)}"
    assert builtins <= set(BACKENDS), f"built-in backends that failed to load: {sorted(builtins - set(BACKENDS))}"
    assert set(KIT_CHECKS) | set(EMPTY_CHECKS) == set(CHECKS)


@pytest.mark.parametrize("name", BACKENDS)
def test_conformance_kit(name: str) -> None:
    results = check_backend(name, checks=KIT_CHECKS)  # raises BackendCheckError on any failure
    skipped = {check for check, outcome in results.items() if outcome.startswith("skipped")}
    assert list(results) == list(KIT_CHECKS)
    if name in SKIPPED:
        assert skipped == SKIPPED[name], results


#: Backend options that change what the sites compute, run through the whole kit too.
OPTION_CASES = [
    ("grid", {"sites": "conv", "conv_weights": "path"}),
    ("gaunt", {"conv_weights": "path"}),
    ("grid", {"product_basis": "factors"}),
    ("gaunt", {"product_basis": "factors"}),
    ("grid", {"conv_weights": "node_path"}),
    ("gaunt", {"conv_weights": "node_path", "product_basis": "cp", "product_rank": 2}),
    ("grid", {"product_basis": "cp"}),
]


@pytest.mark.parametrize("name,options", OPTION_CASES, ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={x}" for k, x in v.items()))
def test_conformance_kit_with_options(name: str, options: dict) -> None:
    results = check_backend(name, options, checks=KIT_CHECKS)
    assert results == {check: "passed" for check in KIT_CHECKS}, results


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
def molecule():
    return synthetic_molecule(10, small_mace_config()["atomic_numbers"])


_MODELS: dict[str, torch.nn.Module] = {}


def _model(name: str) -> torch.nn.Module:
    """One float64 model per backend for the whole module (e3nn's takes seconds to build)."""
    if name not in _MODELS:
        _MODELS[name] = _build(name)
    return _MODELS[name]


@pytest.fixture(params=BACKENDS)
def model(request) -> tuple[str, torch.nn.Module]:
    return request.param, _model(request.param)


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
def test_grid_builds_every_interaction_class(interaction) -> None:
    net = _build("grid", interaction=interaction)
    convs = [type(block.conv_tp).__name__ for block in net.interactions]
    assert convs == ["SphereConv"] * len(convs), convs
    results = check_backend("grid", checks=("o3", "translation"), dtypes=(torch.float64,), config={"interaction": interaction})
    assert results == {"o3": "passed", "translation": "passed"}
