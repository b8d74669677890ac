"""Pure SO(3) math for Gaunt tensor products: no MACE, no backends.

Real spherical harmonics in e3nn 0.4.4's convention, exact sphere quadrature grids and
analytic Gaunt coefficients. Everything is float64 NumPy; backends turn these tables into
torch buffers.
"""

from ._fourier import TorusGrid, fourier_coefficients, fourier_projection, minimal_torus, torus_points
from ._gaunt import gaunt_coefficients, gaunt_path_allowed, gaunt_tensor, wigner_3j_symbol
from ._lebedev import LEBEDEV_DEGREES, LebedevGrid, lebedev_grid, smallest_exact_grid
from ._quadrature import SphereGrid, minimal_grid
from ._spherical_harmonics import sh_dim, spherical_harmonics

__all__ = [
    "LEBEDEV_DEGREES",
    "LebedevGrid",
    "lebedev_grid",
    "smallest_exact_grid",
    "SphereGrid",
    "TorusGrid",
    "fourier_coefficients",
    "fourier_projection",
    "gaunt_coefficients",
    "gaunt_path_allowed",
    "gaunt_tensor",
    "minimal_grid",
    "minimal_torus",
    "sh_dim",
    "spherical_harmonics",
    "torus_points",
    "wigner_3j_symbol",
]
