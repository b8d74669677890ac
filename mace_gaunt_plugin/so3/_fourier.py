"""Real spherical harmonics in the 2D Fourier basis ``e^{i(u theta + v phi)}`` (Luo et al. 2024).

Coordinates are those of :mod:`._quadrature`: ``theta`` is the polar angle from e3nn's ``y``
axis and ``phi`` the azimuth, so a direction is
``(x, y, z) = (sin theta sin phi, cos theta, sin theta cos phi)``. The same formula maps
the whole torus ``[0, 2 pi)^2`` onto the sphere, and for ``theta > pi`` it sends
``(theta, phi)`` to the point ``(2 pi - theta, phi + pi)``: reading every spherical
function through it is exactly the extension ``Y(theta > pi, phi) = Y(2 pi - theta, phi + pi)``.
Under that extension each ``Y_lm`` is a trigonometric polynomial,

``Y_lm(theta, phi) = sum_{u, v} F[lm, u, v] e^{i(u theta + v phi)}``,  ``|u| <= l``,
``u = l (mod 2)``, ``v = +-m``,

and products of spherical functions are products of trigonometric polynomials, i.e. 2D
convolutions of their coefficient arrays. Projecting a product back onto ``Y_lm`` needs

``Z[lm, u, v] = int_0^pi int_0^{2 pi} e^{i(u theta + v phi)} Y_lm(theta, phi) sin(theta) dphi dtheta``,

dense in ``u`` (the half range breaks the orthogonality of ``e^{iu theta}``), zero unless
``v = +-m``. Both tables are float64/complex128 NumPy and cached per degree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from ._spherical_harmonics import sh_dim, spherical_harmonics

__all__ = [
    "TorusGrid",
    "fourier_coefficients",
    "fourier_projection",
    "minimal_torus",
    "torus_points",
]


def torus_points(n_theta: int, n_phi: int) -> np.ndarray:
    """Unit vectors at ``theta_j = 2 pi j / n_theta``, ``phi_k = 2 pi k / n_phi``, shape
    ``[n_theta * n_phi, 3]``, theta-major. Points with ``theta > pi`` land on the sphere
    at ``(2 pi - theta, phi + pi)``, which is the Fourier extension."""
    if n_theta < 1 or n_phi < 1:
        raise ValueError(f"torus_points needs n_theta, n_phi >= 1, got {n_theta}, {n_phi}")
    theta = 2 * math.pi * np.arange(n_theta) / n_theta
    phi = 2 * math.pi * np.arange(n_phi) / n_phi
    s = np.sin(theta)[:, None]
    xyz = np.stack(
        [s * np.sin(phi)[None, :], np.cos(theta)[:, None] * np.ones(n_phi)[None, :], s * np.cos(phi)[None, :]], axis=-1
    )
    return xyz.reshape(-1, 3)


@lru_cache(maxsize=None)
def _fourier_table(lmax: int) -> np.ndarray:
    # Sampling a trigonometric polynomial of degree <= lmax at n >= 2 lmax + 1 uniform
    # points and taking the DFT recovers its coefficients exactly (no aliasing), so the
    # only error is float64 rounding. n = 2 lmax + 2 keeps it even.
    n = 2 * lmax + 2
    samples = spherical_harmonics(lmax, torus_points(n, n)).reshape(n, n, sh_dim(lmax))
    spec = np.fft.fft2(samples, axes=(0, 1)) / (n * n)  # spec[u mod n, v mod n, lm]
    idx = np.arange(-lmax, lmax + 1) % n
    table = np.ascontiguousarray(np.moveaxis(spec[np.ix_(idx, idx)], -1, 0))  # [lm, u + lmax, v + lmax]
    # Selection rules: |u| <= l, u = l (mod 2), v = +-m. Anything else must be rounding.
    u = np.arange(-lmax, lmax + 1)
    mask = np.zeros(table.shape, dtype=bool)
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            rows = (np.abs(u) <= l) & ((u - l) % 2 == 0)
            cols = np.abs(u) == abs(m)
            mask[l * l + l + m] = rows[:, None] & cols[None, :]
    leak = np.abs(table[~mask]).max(initial=0.0)
    if leak > 1e-12:
        raise ArithmeticError(f"SH -> Fourier table for lmax={lmax} breaks the selection rules by {leak:.2e}")
    table[~mask] = 0.0
    # Coefficients allowed by the rules but zero by accident (e.g. l=2, m=1, u=0) are
    # rounding-level too: make them exact zeros so the sparsity is the true one.
    table[np.abs(table) < 1e-14] = 0.0
    table.setflags(write=False)
    return table


def fourier_coefficients(lmax: int) -> np.ndarray:
    """Fourier coefficients ``F`` of e3nn's real spherical harmonics (integral-normalised).

    Returns
    -------
    np.ndarray, complex128, shape ``[(lmax + 1)**2, 2 lmax + 1, 2 lmax + 1]``
        ``F[lm, u + lmax, v + lmax]`` with ``Y_lm = sum_{u,v} F e^{i(u theta + v phi)}``.
        Real functions: ``F[lm, -u, -v] = conj(F[lm, u, v])``.

    Examples
    --------
    >>> f = fourier_coefficients(3)
    >>> int((f != 0).sum()), f.size  # the sparsity quoted by Luo et al.
    (86, 784)
    """
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    return _fourier_table(lmax).copy()


def _half_range_sin_integral(k: np.ndarray) -> np.ndarray:
    """``int_0^pi e^{i k theta} sin(theta) dtheta`` for integer ``k``: ``2 / (1 - k^2)`` for
    even ``k``, ``+-i pi / 2`` for ``k = +-1``, zero for other odd ``k``."""
    k = np.asarray(k)
    out = np.zeros(k.shape, dtype=np.complex128)
    even = k % 2 == 0
    out[even] = 2.0 / (1.0 - k[even].astype(np.float64) ** 2)
    out[k == 1] = 0.5j * math.pi
    out[k == -1] = -0.5j * math.pi
    return out


@lru_cache(maxsize=None)
def _projection_table(lmax: int, umax: int) -> np.ndarray:
    f = _fourier_table(lmax)  # [lm, u' + lmax, v' + lmax]
    u = np.arange(-umax, umax + 1)
    up = np.arange(-lmax, lmax + 1)
    kernel = _half_range_sin_integral(u[:, None] + up[None, :])  # [u, u']
    # int_0^{2 pi} e^{i (v + v') phi} dphi = 2 pi [v' = -v]: flip F along v.
    table = 2 * math.pi * np.einsum("ab,lbc->lac", kernel, f[:, :, ::-1])  # [lm, u + umax, v + lmax]
    table[np.abs(table) < 1e-14] = 0.0
    table = np.ascontiguousarray(table)
    table.setflags(write=False)
    return table


def fourier_projection(lmax: int, umax: int) -> np.ndarray:
    """Projection of Fourier coefficients back onto real spherical harmonics.

    For a spherical function ``h = sum_{u,v} H[u, v] e^{i(u theta + v phi)}`` (extended as
    above, ``|u| <= umax``), ``int_{S^2} h Y_lm = sum_{u,v} H[u, v] Z[lm, u, v]``.

    Returns
    -------
    np.ndarray, complex128, shape ``[(lmax + 1)**2, 2 umax + 1, 2 lmax + 1]``
        ``Z[lm, u + umax, v + lmax]``; frequencies ``|v| > lmax`` project to zero.

    Examples
    --------
    >>> f, z = fourier_coefficients(2), fourier_projection(2, 2)
    >>> gram = np.einsum("auv,buv->ab", f, z).real  # int Y_a Y_b = identity
    >>> bool(np.allclose(gram, np.eye(9), atol=1e-13))
    True
    """
    if lmax < 0 or umax < 0:
        raise ValueError(f"lmax and umax must be >= 0, got {lmax}, {umax}")
    return _projection_table(lmax, umax).copy()


@dataclass(frozen=True)
class TorusGrid:
    """The uniform ``n_theta x n_phi`` grid on the (theta, phi) torus that the FFTs use.

    Pointwise products of samples here are 2D convolutions of Fourier coefficients. A
    function whose Fourier degrees are at most ``(du, dv)`` is recovered exactly from its
    samples when ``n_theta >= 2 du + 1`` and ``n_phi >= 2 dv + 1``; its projection onto
    degrees ``<= lmax`` only needs ``n_phi >= max(dv + lmax + 1, 2 lmax + 1)`` (aliases
    land outside ``|v| <= lmax``), while the projection is dense in ``u``.

    Examples
    --------
    >>> g = minimal_torus(product_degree=6, lmax_out=3)
    >>> (g.n_theta, g.n_phi, g.size)
    (13, 10, 130)
    """

    n_theta: int
    n_phi: int

    def __post_init__(self) -> None:
        if self.n_theta < 1 or self.n_phi < 1:
            raise ValueError(f"TorusGrid needs n_theta, n_phi >= 1, got {self.n_theta}, {self.n_phi}")

    @property
    def size(self) -> int:
        return self.n_theta * self.n_phi

    def exact_for(self, product_degree: int, lmax_out: int) -> bool:
        """Whether a product of total degree ``product_degree`` projects exactly onto degrees
        ``<= lmax_out`` through this grid."""
        return self.n_theta >= 2 * product_degree + 1 and self.n_phi >= max(product_degree + lmax_out + 1, 2 * lmax_out + 1)

    @cached_property
    def points(self) -> np.ndarray:
        """Unit vectors, shape ``[size, 3]``, theta-major (see :func:`torus_points`)."""
        return torus_points(self.n_theta, self.n_phi)


def minimal_torus(product_degree: int, lmax_out: int) -> TorusGrid:
    """Smallest torus grid on which a product of total degree ``product_degree`` (e.g.
    ``L1 + L2``, or ``nu * L`` for a power) projects exactly onto degrees ``<= lmax_out``."""
    if product_degree < 0 or lmax_out < 0:
        raise ValueError(f"degrees must be >= 0, got {product_degree}, {lmax_out}")
    return TorusGrid(n_theta=2 * product_degree + 1, n_phi=max(product_degree + lmax_out + 1, 2 * lmax_out + 1))
