"""The ``gaunt`` backend (2D Fourier engine) against the ``grid`` backend: same site modules,
same weights, so the same function; plus the Fourier engine's own exactness, TorchScript
and second derivatives. The grid backend is itself checked against analytic Gaunt
coefficients in test_grid_sites.py; the engines share no numerical code."""

from __future__ import annotations

import io

import pytest
import torch
from e3nn import o3
from e3nn.util import jit

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends._sphere_sites import EngineSpec
from mace_gaunt_plugin.backends.gaunt_backend import FourierEngine
from mace_gaunt_plugin.backends.grid_backend import GridEngine
from mace_gaunt_plugin.testing import TOLERANCES, atoms_to_batch, default_dtype, model_energy_forces, small_mace_config

GAUNT = mgp.get_backend("gaunt")


def test_registered_in_the_gaunt_family() -> None:
    assert GAUNT.function_family == mgp.get_backend("grid").function_family == "gaunt"
    assert [o.name for o in GAUNT.options] == [o.name for o in mgp.get_backend("grid").options]


@pytest.mark.parametrize(
    "spec",
    [
        EngineSpec((0, 1, 2), (0, 1, 2, 3), (0, 1, 2, 3), 5),  # conv, hidden L = 2
        EngineSpec((0,), (0, 1, 2, 3), (0, 1, 2, 3), 3),  # first-layer conv
        EngineSpec((0, 1, 2, 3), (), (0, 1, 2), 9),  # product site, correlation 3
        EngineSpec((1, 3), (2,), (1, 3, 5), 5),  # gaps in the degrees
    ],
)
def test_fourier_engine_products_equal_grid_engine(spec: EngineSpec, float64: torch.dtype) -> None:
    fourier, grid = FourierEngine(spec), GridEngine(spec)
    k_in = sum(2 * l + 1 for l in spec.degrees_in)
    x = torch.randn(3, 4, k_in)
    if spec.degrees_edge:
        y = torch.randn(3, sum(2 * l + 1 for l in spec.degrees_edge))
        w = torch.randn(3, len(spec.degrees_edge))

        def products(e):
            h = (e.edge_points(y) * w[:, :, None]).sum(1)  # [3, P]
            split = e.to_points_split(x)  # [3, 4, n_in, P]
            torch.testing.assert_close(split.sum(2), e.to_points(x), atol=1e-12, rtol=0)
            return e.from_points(e.to_points(x) * h[:, None, :]), e.from_points((split * h[:, None, None, :]).sum(2))

    else:
        nu = spec.product_degree // max(spec.degrees_in)

        def products(e):
            f = e.to_points(x)
            return tuple(e.from_points(f**k) for k in range(1, nu + 1))

    for a, b in zip(products(fourier), products(grid)):
        assert a.abs().max() > 1e-3
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)


def _same_weight_models(options: dict, **config_overrides) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    cfg = small_mace_config(**config_overrides)
    torch.manual_seed(0)
    grid = mgp.build_model("grid", backend_options=options, **cfg)
    torch.manual_seed(1)
    gaunt = mgp.build_model("gaunt", backend_options=options, **cfg)
    reference = dict(grid.named_parameters())
    with torch.no_grad():
        for name, p in gaunt.named_parameters():
            p.copy_(reference[name])
    return grid, gaunt, cfg


@pytest.mark.parametrize(
    "options,overrides",
    [
        ({}, {}),
        ({"conv_weights": "l1l2", "fused": False}, {"hidden_irreps": "4x0e + 4x1o + 4x2e"}),
        ({"sites": "product"}, {"correlation": 2}),
    ],
)
def test_gaunt_model_equals_same_weight_grid_model(options, overrides, bpa_atoms, float64, one_thread) -> None:
    grid, gaunt, cfg = _same_weight_models(options, **overrides)
    assert mgp.backend_of(gaunt) == "gaunt" and mgp.backend_of(grid) == "grid"
    batch = atoms_to_batch(bpa_atoms[:2], cfg["atomic_numbers"], cfg["r_max"])
    e_grid, f_grid = model_energy_forces(grid, batch)
    e_gaunt, f_gaunt = model_energy_forces(gaunt, batch)
    torch.testing.assert_close(e_gaunt, e_grid, atol=1e-9, rtol=0)
    torch.testing.assert_close(f_gaunt, f_grid, atol=1e-9, rtol=0)
    assert f_grid.abs().max() > 1e-3


def test_float32_model_matches_float64(bpa_atoms, one_thread) -> None:
    with default_dtype(torch.float64):
        _, model64, cfg = _same_weight_models({}, hidden_irreps="4x0e + 4x1o")
        batch64 = atoms_to_batch(bpa_atoms[:1], cfg["atomic_numbers"], cfg["r_max"])
        e64, f64 = model_energy_forces(model64, batch64)
    with default_dtype(torch.float32):
        model32 = mgp.build_model("gaunt", **small_mace_config(hidden_irreps="4x0e + 4x1o"))
        reference = dict(model64.named_parameters())
        with torch.no_grad():
            for name, p in model32.named_parameters():
                p.copy_(reference[name])
        batch32 = atoms_to_batch(bpa_atoms[:1], cfg["atomic_numbers"], cfg["r_max"])
        e32, f32 = model_energy_forces(model32, batch32)
    assert e32.dtype == torch.float32
    scale = float(e64.detach().abs().max())
    torch.testing.assert_close(e32.double(), e64, atol=TOLERANCES[torch.float32] * scale, rtol=0)
    torch.testing.assert_close(f32.double(), f64, atol=TOLERANCES[torch.float32] * 10, rtol=0)


def test_torchscript_model_matches_eager(bpa_atoms, float64, one_thread) -> None:
    cfg = small_mace_config(hidden_irreps="4x0e + 4x1o")
    torch.manual_seed(0)
    model = mgp.build_model("gaunt", **cfg)
    batch = atoms_to_batch(bpa_atoms[:2], cfg["atomic_numbers"], cfg["r_max"])
    buf = io.BytesIO()
    torch.jit.save(jit.compile(model), buf)
    buf.seek(0)
    scripted = torch.jit.load(buf)
    assert mgp.backend_of(scripted) == "gaunt"
    e, f = model_energy_forces(model, batch)
    e_s, f_s = model_energy_forces(scripted, batch)
    torch.testing.assert_close(e_s, e, atol=1e-10, rtol=0)
    torch.testing.assert_close(f_s, f, atol=1e-10, rtol=0)


def test_sites_twice_differentiable(float64, one_thread) -> None:
    opts = GAUNT.resolve_options({"fused": False})
    i1, i2 = o3.Irreps("2x0e+2x1o"), o3.Irreps("1x0e+1x1o+1x2e")
    conv = GAUNT.build_conv(i1, i2, GAUNT.conv_irreps_out(i1, i2, o3.Irreps("2x0e+2x1o+2x2e"), opts), None, opts)
    x1 = torch.randn(3, i1.dim, requires_grad=True)
    x2 = torch.randn(3, i2.dim, requires_grad=True)
    w = torch.randn(3, conv.weight_numel, requires_grad=True)
    assert torch.autograd.gradgradcheck(conv, (x1, x2, w))
    prod = GAUNT.build_product(o3.Irreps("2x0e+2x1o+2x2e"), o3.Irreps("2x0e+2x1o"), 3, 2, opts)
    feats = torch.randn(3, 2, 9, requires_grad=True)
    attrs = torch.eye(2)[[0, 1, 1]]
    assert torch.autograd.gradgradcheck(lambda f: prod(f, attrs), (feats,))


def test_training_on_forces_reaches_site_weights(bpa_atoms, float64, one_thread) -> None:
    # forces need dE/dx; training on them needs its gradient w.r.t. the weights
    cfg = small_mace_config(hidden_irreps="4x0e + 4x1o", num_interactions=1)
    model = mgp.build_model("gaunt", **cfg)
    batch = atoms_to_batch(bpa_atoms[:1], cfg["atomic_numbers"], cfg["r_max"])
    _, forces = model_energy_forces(model, batch, training=True)
    forces.pow(2).sum().backward()
    prod = model.products[0].symmetric_contractions
    assert prod.weights.grad is not None and prod.weights.grad.abs().max() > 0
    radial = list(model.interactions[0].conv_tp_weights.parameters())[-1]  # feeds the conv's weights
    assert radial.grad is not None and radial.grad.abs().max() > 0


def test_refuses_like_grid() -> None:
    with pytest.raises(mgp.UnsupportedIrrepsError, match="natural parity"):
        mgp.build_model("gaunt", **small_mace_config(hidden_irreps="8x0e + 8x1e"))
