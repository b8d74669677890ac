"""`use_backend`, `build_model` and `backend_of` with the stock e3nn backend."""

from __future__ import annotations

import pytest
import torch

import mace.modules.blocks as blocks
from mace import modules

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends.base import BackendModule, TPBackend
from mace_gaunt_plugin.errors import BackendError, BackendMismatchError, BackendOptionError, UnknownBackendError
from mace_gaunt_plugin.registry import register_backend
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


class _PlainConvBackend(TPBackend):
    """Returns e3nn's own TensorProduct (a plain nn.Module) for the conv site."""

    def build_conv(self, irreps_node, irreps_edge, irreps_out, instructions, options):
        from e3nn import o3

        return o3.TensorProduct(irreps_node, irreps_edge, irreps_out, instructions, shared_weights=False, internal_weights=False)


class _Mislabelled(BackendModule):
    def __init__(self) -> None:
        super().__init__("someone-else", "product", {})


class _MislabelledBackend(TPBackend):
    def build_conv(self, irreps_node, irreps_edge, irreps_out, instructions, options):
        return _Mislabelled()


def test_site_module_must_be_the_backends_backend_module() -> None:
    cfg = small_mace_config(hidden_irreps="4x0e + 4x1o", num_interactions=1)
    with register_backend(_PlainConvBackend(name="plain")):
        with pytest.raises(BackendError, match=r"'plain' built a e3nn\..*TensorProduct for the 'conv' site.*BackendModule"):
            mgp.build_model("plain", **cfg)
        with pytest.raises(BackendError, match="'plain'.*'conv'"):
            with mgp.use_backend("plain"):
                modules.ScaleShiftMACE(**cfg)
    with register_backend(_MislabelledBackend(name="mislabelled")):
        with pytest.raises(BackendError, match="calls itself backend 'someone-else', site 'product'"):
            mgp.build_model("mislabelled", **cfg)
    assert _current() == STOCK


def _stock_built(**kwargs):
    with mgp.use_backend("e3nn"):  # innermost wins: a stock model whatever the caller asked for
        return modules.ScaleShiftMACE(**kwargs)


def test_build_model_refuses_a_model_without_the_backends_modules() -> None:
    cfg = small_mace_config(hidden_irreps="4x0e + 4x1o", num_interactions=1)
    with pytest.raises(BackendMismatchError, match="TP backend 'grid': the ScaleShiftMACE built uses 'e3nn'"):
        mgp.build_model("grid", model_cls=_stock_built, **cfg)
    assert mgp.backend_of(mgp.build_model("e3nn", model_cls=_stock_built, **cfg)) == "e3nn"


def test_backend_of_raises_on_a_model_it_cannot_account_for() -> None:
    cfg = small_mace_config(hidden_irreps="4x0e + 4x1o", num_interactions=1)
    model = modules.ScaleShiftMACE(**cfg)
    assert mgp.backend_of(model) == "e3nn"
    model.products[0].symmetric_contractions = torch.nn.Identity()
    with pytest.raises(BackendMismatchError, match=r"products\.0\.symmetric_contractions holds a torch\.nn\.modules\.linear\.Identity"):
        mgp.backend_of(model)
    with pytest.raises(BackendMismatchError, match="not a MACE model"):
        mgp.backend_of(torch.nn.Linear(2, 2))
    grid = mgp.build_model("grid", backend_options={"sites": "conv"}, **cfg)  # product stays MACE's
    assert mgp.backend_of(grid) == "grid"
    grid.interactions[0].conv_tp = torch.nn.Identity()
    with pytest.raises(BackendMismatchError, match="interactions.0.conv_tp"):
        mgp.backend_of(grid)
