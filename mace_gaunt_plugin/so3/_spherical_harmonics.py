"""Real spherical harmonics in e3nn 0.4.4's convention, for any degree.

e3nn's real spherical harmonics are the textbook real harmonics (no Condon-Shortley
phase) with ``y`` as the polar axis: ``Y_e3nn(x, y, z) = Y_std(x'=z, y'=x, z'=y)``,
components ordered ``m = -l .. l``. e3nn stops at ``l = 11``; this module has no limit,
which the Gaunt products of two ``l = 6`` functions (output degree 12) need.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["spherical_harmonics", "sh_dim"]


def sh_dim(lmax: int) -> int:
    """Number of components of all degrees ``0..lmax``: ``(lmax + 1)**2``."""
    return (lmax + 1) ** 2


def _legendre_no_cs(lmax: int, t: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Associated Legendre functions ``P_l^m(t)`` for ``0 <= m <= l <= lmax``, without
    the Condon-Shortley phase, by the standard stable three-term recursion."""
    s = np.sqrt(np.clip(1.0 - t * t, 0.0, None))
    p: dict[tuple[int, int], np.ndarray] = {(0, 0): np.ones_like(t)}
    for m in range(1, lmax + 1):
        p[(m, m)] = (2 * m - 1) * s * p[(m - 1, m - 1)]
    for m in range(0, lmax):
        p[(m + 1, m)] = (2 * m + 1) * t * p[(m, m)]
    for m in range(0, lmax + 1):
        for l in range(m + 2, lmax + 1):
            p[(l, m)] = ((2 * l - 1) * t * p[(l - 1, m)] - (l + m - 1) * p[(l - 2, m)]) / (l - m)
    return p


def spherical_harmonics(
    lmax: int, xyz: np.ndarray, normalization: str = "integral"
) -> np.ndarray:
    """Real spherical harmonics of degrees ``0..lmax`` at the directions ``xyz``.

    Parameters
    ----------
    lmax : int
        Highest degree.
    xyz : np.ndarray, shape ``[..., 3]``
        Directions (need not be normalised; zero vectors are not allowed).
    normalization : {"integral", "component"}
        ``"integral"``: the integral of ``Y_lm**2`` over the sphere is 1.
        ``"component"``: ``sum_m Y_lm**2 = 2l + 1`` at every point (e3nn's and MACE's
        default for edge attributes); equal to ``sqrt(4 pi)`` times the integral form.

    Returns
    -------
    np.ndarray, shape ``[..., (lmax + 1)**2]``, float64, e3nn's component order.

    Examples
    --------
    >>> y = spherical_harmonics(1, np.array([0.0, 0.0, 1.0]), "component")
    >>> np.round(y, 12).tolist()
    [1.0, 0.0, 0.0, 1.732050807569]
    """
    if normalization not in ("integral", "component"):
        raise ValueError(f"normalization must be 'integral' or 'component', got {normalization!r}")
    xyz = np.asarray(xyz, dtype=np.float64)
    r = np.linalg.norm(xyz, axis=-1)
    if np.any(r == 0):
        raise ValueError("spherical_harmonics: zero-length direction")
    # e3nn's frame -> textbook frame: x' = z, y' = x, z' = y (a proper rotation).
    xs, ys, zs = xyz[..., 2] / r, xyz[..., 0] / r, xyz[..., 1] / r
    phi = np.arctan2(ys, xs)
    p = _legendre_no_cs(lmax, zs)
    out = []
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            k = abs(m)
            norm = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - k) / math.factorial(l + k))
            if m == 0:
                out.append(norm * p[(l, 0)])
            elif m > 0:
                out.append(math.sqrt(2.0) * norm * p[(l, k)] * np.cos(k * phi))
            else:
                out.append(math.sqrt(2.0) * norm * p[(l, k)] * np.sin(k * phi))
    y = np.stack(out, axis=-1)
    if normalization == "component":
        y = y * math.sqrt(4 * math.pi)
    return y
