"""Lebedev quadrature rules on the sphere (octahedrally symmetric, exact to a degree).

For the small degrees a Gaunt product needs, a Lebedev rule integrates every polynomial
of total degree ``<= degree`` exactly with fewer points than the Gauss-Legendre x uniform
grid (:func:`minimal_grid`): degree 9 takes 38 points instead of 50. The rules are
given by their octahedral orbits (Lebedev 1976; Lebedev & Laikov 1999) with weights
normalised to sum to 1, and checked for exactness by the tests.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ._spherical_harmonics import spherical_harmonics

__all__ = ["LebedevGrid", "lebedev_grid", "LEBEDEV_DEGREES", "smallest_exact_grid"]

# degree -> list of (orbit, parameter or None, weight / (4 pi))
_RULES: dict[int, list[tuple[str, float | None, float]]] = {
    3: [("a1", None, 1 / 6)],
    5: [("a1", None, 1 / 15), ("a3", None, 3 / 40)],
    7: [("a1", None, 1 / 21), ("a2", None, 4 / 105), ("a3", None, 9 / 280)],
    9: [("a1", None, 1 / 105), ("a3", None, 9 / 280), ("c1", 0.8880738339771153, 1 / 35)],
    11: [
        ("a1", None, 4 / 315),
        ("a2", None, 64 / 2835),
        ("a3", None, 27 / 1280),
        ("b1", 1 / math.sqrt(11), 14641 / 725760),
    ],
    13: [
        ("a1", None, 0.5130671797338464e-3),
        ("a2", None, 0.1660406956574204e-1),
        ("a3", None, -0.2958603896103896e-1),
        ("b1", 0.4803844614152614, 0.2657620708215946e-1),
        ("c1", 0.3207726489807764, 0.1652217099371571e-1),
    ],
}

#: Degrees with a tabulated rule.
LEBEDEV_DEGREES = tuple(sorted(_RULES))


def _orbit(kind: str, par: float | None) -> np.ndarray:
    if kind == "a1":
        base = (1.0, 0.0, 0.0)
    elif kind == "a2":
        base = (0.0, math.sqrt(0.5), math.sqrt(0.5))
    elif kind == "a3":
        s = 1 / math.sqrt(3)
        base = (s, s, s)
    elif kind == "b1":
        base = (par, par, math.sqrt(1 - 2 * par * par))
    elif kind == "c1":
        base = (par, math.sqrt(1 - par * par), 0.0)
    else:
        raise ValueError(kind)
    seen, out = set(), []
    for perm in itertools.permutations(base):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            v = tuple(s * x for s, x in zip(signs, perm))
            key = tuple(round(x, 12) + 0.0 for x in v)
            if key not in seen:
                seen.add(key)
                out.append(v)
    return np.array(out)


@dataclass(frozen=True)
class LebedevGrid:
    """A Lebedev rule: same interface as :class:`SphereGrid` (``size``, ``exact_degree``,
    ``points``, ``weights`` summing to ``4 pi``, ``sh``).

    >>> g = lebedev_grid(9)
    >>> g.size, round(float(g.weights.sum() / (4 * np.pi)), 12)
    (38, 1.0)
    """

    degree: int

    def __post_init__(self) -> None:
        if self.degree not in _RULES:
            raise ValueError(f"no Lebedev rule of degree {self.degree} tabulated; available: {list(LEBEDEV_DEGREES)}")

    @cached_property
    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        pts, wts = [], []
        for kind, par, w in _RULES[self.degree]:
            o = _orbit(kind, par)
            pts.append(o)
            wts.append(np.full(len(o), 4 * math.pi * w))
        return np.concatenate(pts), np.concatenate(wts)

    @property
    def size(self) -> int:
        return len(self._table[1])

    @property
    def exact_degree(self) -> int:
        return self.degree

    @property
    def points(self) -> np.ndarray:
        """Unit vectors, shape ``[size, 3]``."""
        return self._table[0]

    @property
    def weights(self) -> np.ndarray:
        """Quadrature weights, shape ``[size]``, summing to ``4 pi`` (degree 13 has a
        negative orbit weight, as Lebedev's rule does)."""
        return self._table[1]

    def sh(self, lmax: int, normalization: str = "integral") -> np.ndarray:
        """Spherical harmonics at the points, shape ``[size, (lmax + 1)**2]``."""
        return spherical_harmonics(lmax, self.points, normalization)


def lebedev_grid(degree: int) -> LebedevGrid:
    """The smallest tabulated Lebedev rule exact for total degree ``degree``."""
    for d in LEBEDEV_DEGREES:
        if d >= degree:
            return LebedevGrid(d)
    raise ValueError(f"no Lebedev rule tabulated for degree {degree} (largest: {LEBEDEV_DEGREES[-1]})")


def smallest_exact_grid(degree: int) -> "LebedevGrid | SphereGrid":  # noqa: F821
    """The exact rule with the fewest points for total degree ``degree``: a Lebedev rule
    where one is tabulated and smaller, else :func:`minimal_grid`."""
    from ._quadrature import minimal_grid

    gl = minimal_grid(degree)
    if degree <= LEBEDEV_DEGREES[-1]:
        leb = lebedev_grid(max(degree, 1))
        if leb.size < gl.size:
            return leb
    return gl
