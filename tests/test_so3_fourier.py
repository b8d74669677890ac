"""The SH <-> 2D Fourier change of basis (so3._fourier) in float64, against the SH
themselves and against the analytic Gaunt coefficients (never against itself)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import convolve2d

from mace_gaunt_plugin.so3 import (
    TorusGrid,
    fourier_coefficients,
    fourier_projection,
    gaunt_tensor,
    minimal_torus,
    spherical_harmonics,
    torus_points,
)


def _eval_fourier(f: np.ndarray, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    lmax = (f.shape[-1] - 1) // 2
    k = np.arange(-lmax, lmax + 1)
    et = np.exp(1j * np.outer(theta, k))
    ep = np.exp(1j * np.outer(phi, k))
    return np.einsum("nu,nv,luv->nl", et, ep, f)


def test_fourier_series_reproduces_sh_on_the_whole_torus() -> None:
    lmax = 8
    rng = np.random.default_rng(0)
    theta, phi = rng.uniform(0, 2 * math.pi, 50), rng.uniform(0, 2 * math.pi, 50)
    values = _eval_fourier(fourier_coefficients(lmax), theta, phi)
    assert np.abs(values.imag).max() < 1e-13
    # the extension: theta > pi reads the sphere at (2 pi - theta, phi + pi)
    folded = theta > math.pi
    t = np.where(folded, 2 * math.pi - theta, theta)
    p = np.where(folded, phi + math.pi, phi)
    xyz = np.stack([np.sin(t) * np.sin(p), np.cos(t), np.sin(t) * np.cos(p)], axis=-1)
    np.testing.assert_allclose(values.real, spherical_harmonics(lmax, xyz), atol=1e-13, rtol=0)
    assert folded.any() and (~folded).any()


def test_sparsity_and_selection_rules() -> None:
    f = fourier_coefficients(3)
    assert f.shape == (16, 7, 7) and int((f != 0).sum()) == 86  # Luo et al.: 86 of 784
    f = fourier_coefficients(6)
    u = np.arange(-6, 7)
    for l in range(7):
        for m in range(-l, l + 1):
            nz_u, nz_v = np.nonzero(f[l * l + l + m])
            assert set(np.abs(u[nz_v])) == {abs(m)}
            assert all(abs(x) <= l and (x - l) % 2 == 0 for x in u[nz_u])


def test_projection_is_the_half_range_integral() -> None:
    # Z against brute-force quadrature of int_0^pi int_0^2pi e^{i(u t + v p)} Y sin t
    lmax, umax = 3, 5
    z = fourier_projection(lmax, umax)
    t_gl, w_gl = np.polynomial.legendre.leggauss(60)  # smooth integrand on [0, pi]: converged GL
    t = (t_gl + 1) * math.pi / 2
    n_phi = 2 * (lmax + umax) + 2
    p = 2 * math.pi * np.arange(n_phi) / n_phi
    tt, pp = np.meshgrid(t, p, indexing="ij")
    xyz = np.stack([np.sin(tt) * np.sin(pp), np.cos(tt), np.sin(tt) * np.cos(pp)], -1)
    y = spherical_harmonics(lmax, xyz)  # [nt, np, lm]
    w = (w_gl * math.pi / 2 * np.sin(t))[:, None] * (2 * math.pi / n_phi)
    k = np.arange(-umax, umax + 1)
    kv = np.arange(-lmax, lmax + 1)
    brute = np.einsum("tu,pv,tp,tpl->luv", np.exp(1j * np.outer(t, k)), np.exp(1j * np.outer(p, kv)), w, y)
    np.testing.assert_allclose(z, brute, atol=1e-12, rtol=0)


@pytest.mark.parametrize("l1,l2,l3", [(1, 1, 1), (1, 1, 2), (3, 2, 4), (6, 6, 12), (5, 4, 3), (0, 6, 6)])
def test_fourier_convolution_gives_gaunt_coefficients(l1: int, l2: int, l3: int) -> None:
    rng = np.random.default_rng(l1 * 100 + l2 * 10 + l3)
    x, y = rng.normal(size=(l1 + 1) ** 2), rng.normal(size=(l2 + 1) ** 2)
    fx = np.einsum("a,auv->uv", x, fourier_coefficients(l1))
    fy = np.einsum("a,auv->uv", y, fourier_coefficients(l2))
    h = convolve2d(fx, fy)  # [2(l1+l2)+1, 2(l1+l2)+1], centred at l1+l2
    d = l1 + l2
    z = fourier_projection(l3, d)  # [lm, u + d, v + l3]
    vmax = min(d, l3)  # Z vanishes for |v| > l3
    hv = h[:, d - vmax : d + vmax + 1]
    ours = np.einsum("uv,luv->l", hv, z[:, :, l3 - vmax : l3 + vmax + 1])
    ref = np.einsum("a,b,abc->c", x, y, gaunt_tensor(l1, l2, l3))
    assert np.abs(ours.imag).max() < 1e-12
    np.testing.assert_allclose(ours.real, ref, atol=1e-12, rtol=0)


def test_minimal_torus_is_exact_and_one_less_is_not() -> None:
    g = minimal_torus(6, 3)
    assert g.exact_for(6, 3) and g.size == 13 * 10
    assert not TorusGrid(12, 10).exact_for(6, 3) and not TorusGrid(13, 9).exact_for(6, 3)
    pts = torus_points(4, 4)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=-1), 1.0, atol=1e-15)
    with pytest.raises(ValueError):
        minimal_torus(-1, 2)
