"""`use_backend`, `build_model` and `backend_of` with the stock e3nn backend."""

from __future__ import annotations

import pytest
import torch

import mace.modules.blocks as blocks
from mace import modules

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.errors import BackendOptionError, UnknownBackendError
from mace_gaunt_plugin.testing import atoms_to_batch, model_energy_forces, small_mace_config

STOCK = {
    "TensorProduct": blocks.TensorProduct,
    "tp_out_irreps_with_instructions": blocks.tp_out_irreps_with_instructions,
    "SymmetricContractionWrapper": blocks.SymmetricContractionWrapper,
    "InteractionBlock.__init__": blocks.InteractionBlock.__init__,
}


def _current() -> dict:
    return {
        "TensorProduct": blocks.TensorProduct,
        "tp_out_irreps_with_instructions": blocks.tp_out_irreps_with_instructions,
        "SymmetricContractionWrapper": blocks.SymmetricContractionWrapper,
        "InteractionBlock.__init__": blocks.InteractionBlock.__init__,
    }


def test_e3nn_backend_equals_stock_model(bpa_atoms, float64) -> None:
    cfg = small_mace_config()
    torch.manual_seed(0)
    stock = modules.ScaleShiftMACE(**cfg)
    torch.manual_seed(0)
    ours = mgp.build_model("e3nn", **cfg)
    assert mgp.backend_of(ours) == "e3nn"
    assert mgp.backend_options_of(ours) == {}
    batch = atoms_to_batch(bpa_atoms, cfg["atomic_numbers"], cfg["r_max"])
    e0, f0 = model_energy_forces(stock, batch)
    e1, f1 = model_energy_forces(ours, batch)
    # Same construction, same RNG draws: identical parameters, bit for bit.
    sd0, sd1 = stock.state_dict(), ours.state_dict()
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    # Outputs agree to rounding (CPU scatter-add order may differ run to run).
    torch.testing.assert_close(e1, e0, rtol=0, atol=1e-12)
    torch.testing.assert_close(f1, f0, rtol=0, atol=1e-12)


def test_names_restored_after_exit_and_after_exception() -> None:
    with mgp.use_backend("e3nn"):
        assert _current()["TensorProduct"] is not STOCK["TensorProduct"]
    assert _current() == STOCK
    with pytest.raises(RuntimeError, match="boom"):
        with mgp.use_backend("e3nn"):
            raise RuntimeError("boom")
    assert _current() == STOCK
    with mgp.use_backend("e3nn"):
        with mgp.use_backend("e3nn"):
            pass
        assert _current()["TensorProduct"] is not STOCK["TensorProduct"]
    assert _current() == STOCK


def test_bad_name_and_option_refused_before_patching() -> None:
    with pytest.raises(UnknownBackendError):
        with mgp.use_backend("nope"):
            pass
    with pytest.raises(BackendOptionError, match="does not take option"):
        with mgp.use_backend("e3nn", sparsity=0.5):
            pass
    assert _current() == STOCK


def test_stock_model_outside_context_has_no_plugin_modules() -> None:
    with mgp.use_backend("e3nn"):
        pass
    model = modules.ScaleShiftMACE(**small_mace_config(num_interactions=1))
    assert mgp.backend_of(model) == "e3nn"


def _site_classes(model: torch.nn.Module) -> list[str]:
    return [type(b.conv_tp).__name__ for b in model.interactions] + [type(p.symmetric_contractions).__name__ for p in model.products]


def test_nested_innermost_wins_and_leaving_restores_outer(float64) -> None:
    cfg = small_mace_config(hidden_irreps="4x0e + 4x1o", num_interactions=1)
    with mgp.use_backend("grid"):
        with mgp.use_backend("e3nn"):
            inner = modules.ScaleShiftMACE(**cfg)
        with mgp.use_backend("sparse"):  # needs MACE's own instructions, not grid's layout
            sparse = modules.ScaleShiftMACE(**cfg)
        outer = modules.ScaleShiftMACE(**cfg)
    assert _current() == STOCK
    assert mgp.backend_of(inner) == "e3nn" and _site_classes(inner) == ["TensorProduct", "SymmetricContraction"]
    assert mgp.backend_of(sparse) == "sparse"
    assert mgp.backend_of(outer) == "grid" and _site_classes(outer) == ["SphereConv", "SphereProduct"]
    # build_model nests the same way
    with mgp.use_backend("grid"):
        assert mgp.backend_of(mgp.build_model("e3nn", **cfg)) == "e3nn"
        assert mgp.backend_of(mgp.build_model("gaunt", **cfg)) == "gaunt"
        assert mgp.backend_of(modules.ScaleShiftMACE(**cfg)) == "grid"
