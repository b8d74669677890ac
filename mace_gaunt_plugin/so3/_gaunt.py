"""Gaunt coefficients for e3nn's real spherical harmonics, computed analytically.

``G(l1 m1, l2 m2, l3 m3) = integral over S^2 of Y_l1m1 Y_l2m2 Y_l3m3`` (integral-normalised
real harmonics, e3nn order). They come from exact Wigner 3j symbols (Racah's formula in
rational arithmetic) and the complex-to-real change of basis, so they are independent of
any quadrature grid and serve as the oracle for every backend.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = ["wigner_3j_symbol", "gaunt_coefficients", "gaunt_tensor", "gaunt_path_allowed"]


def gaunt_path_allowed(l1: int, l2: int, l3: int) -> bool:
    """Whether ``G(l1, l2, l3)`` can be non-zero: triangle rule and even ``l1 + l2 + l3``."""
    return abs(l1 - l2) <= l3 <= l1 + l2 and (l1 + l2 + l3) % 2 == 0


@lru_cache(maxsize=None)
def wigner_3j_symbol(j1: int, j2: int, j3: int, m1: int, m2: int, m3: int) -> float:
    """The Wigner 3j symbol ``(j1 j2 j3; m1 m2 m3)`` (Condon-Shortley), exact up to the
    final square root, by Racah's formula."""
    if m1 + m2 + m3 != 0 or not abs(j1 - j2) <= j3 <= j1 + j2:
        return 0.0
    if abs(m1) > j1 or abs(m2) > j2 or abs(m3) > j3:
        return 0.0
    f = math.factorial
    delta = Fraction(f(j1 + j2 - j3) * f(j1 - j2 + j3) * f(-j1 + j2 + j3), f(j1 + j2 + j3 + 1))
    pre = delta * f(j1 + m1) * f(j1 - m1) * f(j2 + m2) * f(j2 - m2) * f(j3 + m3) * f(j3 - m3)
    kmin = max(0, j2 - j3 - m1, j1 - j3 + m2)
    kmax = min(j1 + j2 - j3, j1 - m1, j2 + m2)
    total = Fraction(0)
    for k in range(kmin, kmax + 1):
        den = f(k) * f(j3 - j2 + k + m1) * f(j3 - j1 + k - m2) * f(j1 + j2 - j3 - k) * f(j1 - k - m1) * f(j2 - k + m2)
        total += Fraction((-1) ** k, den)
    sign = -1 if (j1 - j2 - m3) % 2 else 1
    # sqrt(pre) * total, with the square root taken once in float64
    value = total * total * pre
    return sign * (1 if total >= 0 else -1) * math.sqrt(float(value))


def _complex_to_real(l: int) -> np.ndarray:
    """Matrix ``U`` with ``Y_real[m] = sum_k U[m, k] Y_complex[k]`` (both ordered -l..l;
    complex harmonics with the Condon-Shortley phase, real ones without)."""
    u = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    u[l, l] = 1.0
    r2 = 1 / math.sqrt(2)
    for k in range(1, l + 1):
        u[l + k, l + k] = (-1) ** k * r2
        u[l + k, l - k] = r2
        u[l - k, l + k] = (-1) ** k * r2 / 1j
        u[l - k, l - k] = -r2 / 1j
    return u


@lru_cache(maxsize=None)
def _gaunt_block(l1: int, l2: int, l3: int) -> np.ndarray:
    shape = (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1)
    if not gaunt_path_allowed(l1, l2, l3):
        return np.zeros(shape)
    pre = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi)) * wigner_3j_symbol(l1, l2, l3, 0, 0, 0)
    gc = np.zeros(shape, dtype=np.complex128)
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            m3 = -m1 - m2
            if abs(m3) <= l3:
                gc[m1 + l1, m2 + l2, m3 + l3] = pre * wigner_3j_symbol(l1, l2, l3, m1, m2, m3)
    g = np.einsum("ai,bj,ck,ijk->abc", _complex_to_real(l1), _complex_to_real(l2), _complex_to_real(l3), gc)
    if np.abs(g.imag).max() > 1e-12:
        raise ArithmeticError(f"real Gaunt coefficients for {(l1, l2, l3)} came out complex")
    out = np.ascontiguousarray(g.real)
    out[np.abs(out) < 1e-15] = 0.0  # exact zeros where the selection rules say so
    out.setflags(write=False)
    return out


def gaunt_coefficients(l1: int, l2: int, l3: int) -> np.ndarray:
    """Gaunt coefficients ``[2l1+1, 2l2+1, 2l3+1]`` for integral-normalised real SH.

    Exactly zero when ``l1 + l2 + l3`` is odd or the triangle rule fails.

    Examples
    --------
    >>> g = gaunt_coefficients(1, 1, 1)
    >>> bool((g == 0).all())
    True
    >>> round(float(gaunt_coefficients(0, 0, 0)[0, 0, 0] * np.sqrt(4 * np.pi)), 12)
    1.0
    """
    for l in (l1, l2, l3):
        if l < 0:
            raise ValueError(f"degrees must be >= 0, got {(l1, l2, l3)}")
    return _gaunt_block(l1, l2, l3).copy()


def gaunt_tensor(lmax1: int, lmax2: int, lmax3: int) -> np.ndarray:
    """All Gaunt coefficients between degrees ``0..lmax1``, ``0..lmax2`` and ``0..lmax3``,
    as one dense ``[(lmax1+1)**2, (lmax2+1)**2, (lmax3+1)**2]`` array."""
    out = np.zeros(((lmax1 + 1) ** 2, (lmax2 + 1) ** 2, (lmax3 + 1) ** 2))
    for l1 in range(lmax1 + 1):
        for l2 in range(lmax2 + 1):
            for l3 in range(lmax3 + 1):
                if gaunt_path_allowed(l1, l2, l3):
                    out[l1 * l1 : (l1 + 1) ** 2, l2 * l2 : (l2 + 1) ** 2, l3 * l3 : (l3 + 1) ** 2] = _gaunt_block(l1, l2, l3)
    return out
