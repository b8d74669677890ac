"""Lebedev rules (so3._lebedev) and the grid engine's choice of quadrature rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from e3nn import o3

from mace_gaunt_plugin.backends._sphere_sites import EngineSpec, SphereConv
from mace_gaunt_plugin.backends.grid_backend import GRID_BACKEND, GridEngine
from mace_gaunt_plugin.so3 import LEBEDEV_DEGREES, LebedevGrid, minimal_grid, smallest_exact_grid


@pytest.mark.parametrize("degree", LEBEDEV_DEGREES)
def test_lebedev_rule_is_exact_to_its_degree_and_not_beyond(degree) -> None:
    g = LebedevGrid(degree)
    np.testing.assert_allclose(np.linalg.norm(g.points, axis=1), 1.0, atol=1e-15)
    assert len({tuple(np.round(p, 12)) for p in g.points}) == g.size  # no duplicate points
    integrals = g.weights @ g.sh(degree + 1)  # integral of each Y_lm (integral-normalised)
    exact = np.zeros_like(integrals)
    exact[0] = math.sqrt(4 * math.pi)
    k = (degree + 1) ** 2
    np.testing.assert_allclose(integrals[:k], exact[:k], rtol=0, atol=1e-13)
    assert np.abs(integrals[k:]).max() > 1e-3  # degree + 1 (even) is not integrated


def test_smallest_exact_grid_never_larger_than_gauss_legendre() -> None:
    sizes = {d: smallest_exact_grid(d).size for d in range(20)}
    assert all(sizes[d] <= minimal_grid(d).size for d in sizes)
    assert sizes[9] == 38 and minimal_grid(9).size == 50  # hidden L=3 conv (3 + 3 + 3)


def test_conv_is_the_same_function_on_every_rule(float64) -> None:
    opts = GRID_BACKEND.resolve_options({})
    i1, i2 = o3.Irreps("3x0e+3x1o+3x2e+3x3o"), o3.Irreps.spherical_harmonics(3)
    out = GRID_BACKEND.conv_irreps_out(i1, i2, o3.Irreps("3x0e+3x1o+3x2e+3x3o"), opts)
    convs = {rule: SphereConv(i1, i2, out, lambda spec, r=rule: GridEngine(spec, r), "grid", opts) for rule in ("gauss-legendre", "lebedev")}
    assert convs["lebedev"].engine.num_points == 38 and convs["gauss-legendre"].engine.num_points == 50
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(4, i1.dim, generator=gen)
    x2 = o3.spherical_harmonics(i2, torch.randn(7, 3, generator=gen), True, normalization="component")
    w = torch.randn(7, convs["lebedev"].weight_numel, generator=gen)
    ei = torch.randint(0, 4, (2, 7), generator=gen)
    torch.testing.assert_close(convs["lebedev"](x1, x2, w, ei), convs["gauss-legendre"](x1, x2, w, ei), rtol=0, atol=1e-12)


def test_unknown_rule_refused() -> None:
    with pytest.raises(ValueError, match="rule"):
        GridEngine(EngineSpec((0,), (0,), (0,), 0), rule="simpson")
    with pytest.raises(ValueError, match="Lebedev"):
        GridEngine(EngineSpec((0, 6), (0, 6), (0, 6), 12), rule="lebedev")
