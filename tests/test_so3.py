"""The pure-math core against e3nn and against independent routes, in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from e3nn import o3

from mace_gaunt_plugin.so3 import (
    SphereGrid,
    gaunt_coefficients,
    gaunt_path_allowed,
    gaunt_tensor,
    minimal_grid,
    spherical_harmonics,
    wigner_3j_symbol,
)


def _directions(n: int = 13, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3))


@pytest.mark.parametrize("normalization", ["integral", "component"])
def test_spherical_harmonics_match_e3nn(normalization: str) -> None:
    xyz = _directions()
    ours = spherical_harmonics(11, xyz, normalization)
    theirs = o3.spherical_harmonics(list(range(12)), torch.tensor(xyz), normalize=True, normalization=normalization)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-12, rtol=0)


def test_spherical_harmonics_orthonormal_beyond_e3nn() -> None:
    lmax = 14  # past e3nn's l = 11
    grid = minimal_grid(2 * lmax)
    y = grid.sh(lmax)
    gram = (y * grid.weights[:, None]).T @ y
    np.testing.assert_allclose(gram, np.eye((lmax + 1) ** 2), atol=1e-12)


def test_l1_is_xyz_order() -> None:
    y = spherical_harmonics(1, np.eye(3), "component")[:, 1:]
    np.testing.assert_allclose(y, math.sqrt(3) * np.eye(3), atol=1e-14)


def _grid_product(grid: SphereGrid, x: np.ndarray, l1: int, y: np.ndarray, l2: int, l3: int) -> np.ndarray:
    sh = grid.sh(max(l1, l2, l3))
    f = sh[:, : (l1 + 1) ** 2] @ x
    g = sh[:, : (l2 + 1) ** 2] @ y
    return (sh[:, : (l3 + 1) ** 2] * (grid.weights * f * g)[:, None]).sum(0)


@pytest.mark.parametrize("l1,l2,l3", [(1, 2, 3), (3, 3, 2), (2, 3, 3), (4, 2, 5)])
def test_grid_product_exact_at_minimal_grid_and_wrong_below(l1: int, l2: int, l3: int) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(l1 + 1) ** 2), rng.normal(size=(l2 + 1) ** 2)
    exact = np.einsum("a,b,abc->c", x, y, gaunt_tensor(l1, l2, l3))
    degree = l1 + l2 + l3
    grid = minimal_grid(degree)
    assert grid.n_theta == math.ceil((degree + 1) / 2) and grid.n_phi == degree + 1
    np.testing.assert_allclose(_grid_product(grid, x, l1, y, l2, l3), exact, atol=1e-12, rtol=0)
    fewer_theta = SphereGrid(grid.n_theta - 1, grid.n_phi)
    fewer_phi = SphereGrid(grid.n_theta, grid.n_phi - 1)
    for bad in (fewer_theta, fewer_phi):
        err = np.abs(_grid_product(bad, x, l1, y, l2, l3) - exact).max()
        assert err > 1e-3, f"{bad} should not be exact for degree {degree} (error {err})"


def test_grid_weights_and_points() -> None:
    grid = SphereGrid(5, 9)
    assert grid.size == 45 and grid.points.shape == (45, 3)
    np.testing.assert_allclose(np.linalg.norm(grid.points, axis=1), 1.0, atol=1e-15)
    assert abs(grid.weights.sum() - 4 * math.pi) < 1e-12
    assert grid.exact_degree == 8
    with pytest.raises(ValueError):
        SphereGrid(0, 3)


def test_wigner_3j_symbol_known_values() -> None:
    # (1 1 0; 0 0 0) = -1/sqrt(3), (2 2 2; 0 0 0) = -sqrt(2/35)
    assert abs(wigner_3j_symbol(1, 1, 0, 0, 0, 0) + 1 / math.sqrt(3)) < 1e-15
    assert abs(wigner_3j_symbol(2, 2, 2, 0, 0, 0) + math.sqrt(2 / 35)) < 1e-15
    assert wigner_3j_symbol(1, 1, 1, 0, 0, 0) == 0.0
    assert wigner_3j_symbol(1, 1, 3, 0, 0, 0) == 0.0  # triangle


def test_gaunt_matches_direct_quadrature() -> None:
    lmax = 5
    analytic = gaunt_tensor(lmax, lmax, 2 * lmax)
    grid = minimal_grid(4 * lmax)
    y = grid.sh(2 * lmax)
    k = (lmax + 1) ** 2
    quad = np.einsum("ga,gb,gc,g->abc", y[:, :k], y[:, :k], y, grid.weights)
    np.testing.assert_allclose(analytic, quad, atol=1e-13, rtol=0)


def test_gaunt_matches_wigner_3j_identity_with_sign() -> None:
    """G = sqrt((2l1+1)(2l2+1)(2l3+1)/4pi) |(l1 l2 l3; 0 0 0)| W_e3nn: in e3nn's basis the
    per-path sign of the DESIGN formula is (-1)^((l1+l2+l3)/2), i.e. the sign of the 3j
    symbol (l1 l2 l3; 0 0 0) itself. e3nn stores its 3j tables in float32, hence 1e-7."""
    checked = 0
    for l1 in range(5):
        for l2 in range(5):
            for l3 in range(abs(l1 - l2), min(l1 + l2, 8) + 1):
                if (l1 + l2 + l3) % 2:
                    continue
                pre = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi))
                w000 = wigner_3j_symbol(l1, l2, l3, 0, 0, 0)
                assert np.sign(w000) == (-1) ** ((l1 + l2 + l3) // 2)
                expected = pre * abs(w000) * o3.wigner_3j(l1, l2, l3).double().numpy()
                np.testing.assert_allclose(gaunt_coefficients(l1, l2, l3), expected, atol=1e-7, rtol=0)
                checked += 1
    assert checked > 40


def test_odd_paths_are_exactly_zero() -> None:
    for l1 in range(4):
        for l2 in range(4):
            for l3 in range(8):
                g = gaunt_coefficients(l1, l2, l3)
                if not gaunt_path_allowed(l1, l2, l3):
                    assert (g == 0).all(), (l1, l2, l3)
                else:
                    assert np.abs(g).max() > 0.01, (l1, l2, l3)
    assert (gaunt_coefficients(1, 1, 1) == 0).all()  # no cross product


def test_gaunt_symmetric_and_read_only() -> None:
    g = gaunt_coefficients(2, 3, 3)
    np.testing.assert_array_equal(g, gaunt_coefficients(3, 2, 3).transpose(1, 0, 2))
    g[0, 0, 0] = 123.0  # a copy: the cache must not change
    assert gaunt_coefficients(2, 3, 3)[0, 0, 0] != 123.0
    with pytest.raises(ValueError):
        gaunt_coefficients(-1, 0, 1)
