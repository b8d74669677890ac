"""Exact quadrature on the sphere: Gauss-Legendre in cos(theta) times uniform phi.

A product of spherical functions of total degree ``D`` is integrated exactly by
``n_theta >= ceil((D + 1) / 2)`` Gauss-Legendre nodes and ``n_phi >= D + 1`` uniform
azimuths. The polar axis is e3nn's ``y`` axis (any axis would do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ._spherical_harmonics import spherical_harmonics

__all__ = ["SphereGrid", "minimal_grid"]


@dataclass(frozen=True)
class SphereGrid:
    """A Gauss-Legendre x uniform-phi grid with ``n_theta * n_phi`` points.

    Examples
    --------
    >>> g = minimal_grid(6)
    >>> (g.n_theta, g.n_phi, g.size)
    (4, 7, 28)
    >>> round(float(g.weights.sum()), 12) == round(4 * np.pi, 12)
    True
    """

    n_theta: int
    n_phi: int

    def __post_init__(self) -> None:
        if self.n_theta < 1 or self.n_phi < 1:
            raise ValueError(f"SphereGrid needs n_theta, n_phi >= 1, got {self.n_theta}, {self.n_phi}")

    @property
    def size(self) -> int:
        return self.n_theta * self.n_phi

    @property
    def exact_degree(self) -> int:
        """Largest total polynomial degree integrated exactly."""
        return min(2 * self.n_theta - 1, self.n_phi - 1)

    @cached_property
    def _nodes(self) -> tuple[np.ndarray, np.ndarray]:
        t, w = np.polynomial.legendre.leggauss(self.n_theta)
        phi = 2 * math.pi * np.arange(self.n_phi) / self.n_phi
        return (t, w), phi  # type: ignore[return-value]

    @cached_property
    def points(self) -> np.ndarray:
        """Unit vectors, shape ``[size, 3]``, theta-major."""
        (t, _), phi = self._nodes
        s = np.sqrt(1.0 - t * t)
        # textbook frame (x', y', z') = (sin t cos phi, sin t sin phi, cos t); e3nn (x, y, z) = (y', z', x')
        xp = np.outer(s, np.cos(phi))
        yp = np.outer(s, np.sin(phi))
        zp = np.outer(t, np.ones_like(phi))
        return np.stack([yp, zp, xp], axis=-1).reshape(-1, 3)

    @cached_property
    def weights(self) -> np.ndarray:
        """Quadrature weights, shape ``[size]``, summing to ``4 pi``."""
        (_, w), _ = self._nodes
        return np.outer(w, np.full(self.n_phi, 2 * math.pi / self.n_phi)).reshape(-1)

    def sh(self, lmax: int, normalization: str = "integral") -> np.ndarray:
        """Spherical harmonics at the grid points, shape ``[size, (lmax + 1)**2]``."""
        return spherical_harmonics(lmax, self.points, normalization)


def minimal_grid(degree: int) -> SphereGrid:
    """Smallest grid that integrates every product of total degree ``degree`` exactly."""
    if degree < 0:
        raise ValueError(f"degree must be >= 0, got {degree}")
    return SphereGrid(n_theta=math.ceil((degree + 1) / 2), n_phi=degree + 1)
