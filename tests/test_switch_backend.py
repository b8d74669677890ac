"""``switch_backend``: gaunt <-> grid keep the function and the weights; every switch across
function families is refused."""

from __future__ import annotations

import pytest
import torch

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends.base import BackendModule
from mace_gaunt_plugin.testing import atoms_to_batch, model_energy_forces, small_mace_config

CONFIG = dict(hidden_irreps="4x0e + 4x1o", num_interactions=2, correlation=2)


@pytest.mark.parametrize("source,target", [("grid", "gaunt"), ("gaunt", "grid")])
def test_switch_keeps_function_and_weights(source, target, bpa_atoms, float64, one_thread) -> None:
    cfg = small_mace_config(**CONFIG)
    torch.manual_seed(0)
    model = mgp.build_model(source, backend_options={"conv_weights": "l1l2"}, **cfg)
    model.eval()
    switched = mgp.switch_backend(model, target)
    assert mgp.backend_of(switched) == target and mgp.backend_of(model) == source  # original untouched
    assert mgp.backend_options_of(switched) == mgp.backend_options_of(model)
    assert not switched.training
    engines = {type(m.engine).__name__ for m in switched.modules() if isinstance(m, BackendModule)}
    assert engines == {"FourierEngine" if target == "gaunt" else "GridEngine"}
    a, b = dict(model.named_parameters()), dict(switched.named_parameters())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k] is not b[k] for k in a)
    batch = atoms_to_batch(bpa_atoms[:2], cfg["atomic_numbers"], cfg["r_max"])
    e0, f0 = model_energy_forces(model, batch)
    e1, f1 = model_energy_forces(switched, batch)
    torch.testing.assert_close(e1, e0, atol=1e-9, rtol=0)
    torch.testing.assert_close(f1, f0, atol=1e-9, rtol=0)
    # and back again gives the original backend's modules
    assert mgp.backend_of(mgp.switch_backend(switched, source)) == source


def test_switch_keeps_float32(one_thread) -> None:
    model = mgp.build_model("grid", **small_mace_config(**CONFIG)).float()
    switched = mgp.switch_backend(model, "gaunt")
    dtypes = {t.dtype for t in list(switched.parameters()) + list(switched.buffers()) if t.is_floating_point()}
    assert dtypes == {torch.float32}


@pytest.mark.parametrize("source,target", [("grid", "e3nn"), ("e3nn", "grid"), ("gaunt", "e3nn"), ("e3nn", "gaunt")])
def test_switch_across_families_is_refused(source, target, one_thread) -> None:
    model = mgp.build_model(source, **small_mace_config(**CONFIG))
    with pytest.raises(mgp.BackendMismatchError, match="compute different functions"):
        mgp.switch_backend(model, target)


def test_switch_refuses_torchscript_and_unknown_names(one_thread) -> None:
    from e3nn.util import jit

    model = mgp.build_model("grid", **small_mace_config(**CONFIG))
    with pytest.raises(mgp.UnknownBackendError):
        mgp.switch_backend(model, "no-such-backend")
    with pytest.raises(mgp.BackendMismatchError, match="eager"):
        mgp.switch_backend(jit.compile(model), "gaunt")
