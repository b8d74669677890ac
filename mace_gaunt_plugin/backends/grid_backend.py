"""The ``grid`` backend: Gaunt tensor products on an exact spherical quadrature grid.

Functions on the sphere are sampled on the exact quadrature rule with the fewest points
for the site's products (:func:`mace_gaunt_plugin.so3.smallest_exact_grid`): a Lebedev
rule up to degree 13 (e.g. 38 points for the hidden-L=3 conv, degree 9, where the
Gauss-Legendre x uniform grid needs 50), a Gauss-Legendre x uniform-phi grid
(:func:`mace_gaunt_plugin.so3.minimal_grid`) beyond. Both are exact, so the rule changes
rounding only. Evaluation and projection are GEMMs with precomputed matrices (quadrature
weights folded into the projection). Site modules, weights and normalisation are the Gaunt family's
(:mod:`._sphere_sites`): a ``grid`` and a ``gaunt`` model with equal weights compute the
same function.
"""

import numpy as np
import torch

from ..so3 import lebedev_grid, minimal_grid, smallest_exact_grid
from ._sphere_backend import SphereBackend, sphere_options
from ._sphere_sites import EngineSpec

__all__ = ["GridEngine", "GRID_BACKEND", "RULES"]


def _columns(degrees: tuple[int, ...]) -> list[int]:
    return [l * l + m for l in degrees for m in range(2 * l + 1)]


def _split(y: np.ndarray, degrees: tuple[int, ...]) -> np.ndarray:
    """``[K, n_degrees * P]``: row of component ``(l, m)`` holds ``Y_lm`` at the points in
    the column block of degree ``l`` and zeros elsewhere."""
    p = y.shape[0]
    out = np.zeros((sum(2 * l + 1 for l in degrees), len(degrees) * p))
    row = 0
    for i, l in enumerate(degrees):
        for m in range(2 * l + 1):
            out[row, i * p : (i + 1) * p] = y[:, l * l + m]
            row += 1
    return out


RULES = ("auto", "gauss-legendre", "lebedev")


class GridEngine(torch.nn.Module):
    """Sphere engine on an exact quadrature rule (see :mod:`._sphere_sites`).

    ``rule``: ``"auto"`` (fewest points), ``"gauss-legendre"`` (Gauss-Legendre x uniform
    phi) or ``"lebedev"`` (up to degree 13).

    >>> e = GridEngine(EngineSpec((0, 1), (0, 1, 2), (0, 1), 3))
    >>> e.num_points  # exact for degree 3 + 1 = 4: Lebedev's 14 points (Gauss-Legendre: 3 x 5)
    14
    >>> GridEngine(EngineSpec((0, 1), (0, 1, 2), (0, 1), 3), rule="gauss-legendre").num_points
    15
    """

    num_points: int
    n_in: int
    n_edge: int

    def __init__(self, spec: EngineSpec, rule: str = "auto") -> None:
        super().__init__()
        if rule == "auto":
            grid = smallest_exact_grid(spec.quadrature_degree)
        elif rule == "gauss-legendre":
            grid = minimal_grid(spec.quadrature_degree)
        elif rule == "lebedev":
            grid = lebedev_grid(spec.quadrature_degree)
        else:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        lmax = max(spec.degrees_in + spec.degrees_edge + spec.degrees_out)
        y = grid.sh(lmax, "integral")  # [P, (lmax+1)**2], float64
        dtype = torch.get_default_dtype()
        self.num_points = grid.size
        self.rule = f"{type(grid).__name__}(degree {grid.exact_degree}, {grid.size} points)"
        self.n_in = len(spec.degrees_in)
        self.n_edge = len(spec.degrees_edge)
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dtype)  # noqa: E731
        self.register_buffer("eval_in", as_t(y[:, _columns(spec.degrees_in)].T))  # [K_in, P]
        self.register_buffer("eval_in_split", as_t(_split(y, spec.degrees_in)))  # [K_in, n_in * P]
        self.register_buffer("eval_edge_split", as_t(_split(y, spec.degrees_edge)))  # [K_edge, n_edge * P]
        self.register_buffer("project", as_t(grid.weights[:, None] * y[:, _columns(spec.degrees_out)]))  # [P, K_out]

    def extra_repr(self) -> str:
        return self.rule

    def to_points(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.eval_in)

    def to_points_split(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.eval_in_split).unflatten(-1, (self.n_in, self.num_points))

    def edge_points(self, y: torch.Tensor) -> torch.Tensor:
        return torch.matmul(y, self.eval_edge_split).reshape(y.shape[0], self.n_edge, self.num_points)

    def from_points(self, v: torch.Tensor) -> torch.Tensor:
        return torch.matmul(v, self.project)


GRID_BACKEND = SphereBackend(
    name="grid",
    description="Gaunt tensor products on an exact sphere quadrature (Lebedev or Gauss-Legendre x uniform; conv and many-body product)",
    options=sphere_options(),
    function_family="gaunt",
    engine_factory=GridEngine,
)
