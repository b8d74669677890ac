"""The ``gaunt`` backend: Gaunt tensor products in the 2D Fourier basis (Luo et al. 2024).

Spherical harmonics become 2D Fourier series in (theta, phi) (a sparse change of basis,
:func:`mace_gaunt_plugin.so3.fourier_coefficients`); products of functions are 2D
convolutions, done with ``torch.fft`` as pointwise products on the uniform torus grid;
projecting back uses the half-range integrals
(:func:`mace_gaunt_plugin.so3.fourier_projection`). The grid is sized per site so that
every product (the conv's ``f * h``, the product site's powers ``f**nu``) is exact.

Site modules, weights and normalisation are the Gaunt family's (:mod:`._sphere_sites`):
a ``gaunt`` and a ``grid`` model with equal weights compute the same function, and
:func:`mace_gaunt_plugin.switch_backend` moves a model between them.
"""


import torch

from ._fourier_ops import FourierAnalysis, FourierSynthesis, half_rows, torus_shape
from ._sphere_backend import SphereBackend, sphere_options
from ._sphere_sites import EngineSpec

__all__ = ["FourierEngine", "GAUNT_BACKEND"]


class FourierEngine(torch.nn.Module):
    """Sphere engine on the (theta, phi) torus grid of the 2D Fourier route (see
    :mod:`._sphere_sites` for the interface).

    The "points" are samples on the ``n_theta x n_phi`` uniform torus grid that the FFTs
    use, so a pointwise product there is the zero-padded 2D convolution of the Fourier
    coefficients. ``n_theta = 2 D + 1`` and ``n_phi`` = the smallest even number
    ``>= max(D + L_out + 1, 2 L + 1)`` for product degree ``D``, output degree ``L_out``
    and largest factor degree ``L``. Only the rows ``theta <= pi`` are kept as points (the
    torus covers the sphere twice; :class:`FourierAnalysis` rebuilds the other rows before
    its FFT), which halves the pointwise work per edge.

    >>> e = FourierEngine(EngineSpec((0, 1), (0, 1, 2), (0, 1), 3))
    >>> e.grid_shape, e.num_points
    ((7, 6), 24)
    """

    num_points: int
    n_in: int
    n_edge: int
    has_edge: bool

    def __init__(self, spec: EngineSpec) -> None:
        super().__init__()
        factors = spec.degrees_in + spec.degrees_edge
        n_theta, n_phi = torus_shape(spec.product_degree, max(spec.degrees_out), max(factors), even_phi=True)
        self.grid_shape = (n_theta, n_phi)
        self.num_points = half_rows(n_theta) * n_phi
        self.n_in = len(spec.degrees_in)
        self.n_edge = len(spec.degrees_edge)
        self.synth_in = FourierSynthesis(spec.degrees_in, n_theta, n_phi, half=True)
        self.synth_in_split = FourierSynthesis(spec.degrees_in, n_theta, n_phi, split=True, half=True)
        self.has_edge = self.n_edge > 0
        # the product site has no edge function: a stand-in keeps the module scriptable
        self.synth_edge = FourierSynthesis(spec.degrees_edge if self.has_edge else (0,), n_theta, n_phi, split=True, half=True)
        self.analysis = FourierAnalysis(spec.degrees_out, n_theta, n_phi, half=True)

    def extra_repr(self) -> str:
        return f"torus={self.grid_shape[0]}x{self.grid_shape[1]}"

    def to_points(self, x: torch.Tensor) -> torch.Tensor:
        return self.synth_in(x)

    def to_points_split(self, x: torch.Tensor) -> torch.Tensor:
        return self.synth_in_split(x)

    def edge_points(self, y: torch.Tensor) -> torch.Tensor:
        return self.synth_edge(y)

    def from_points(self, v: torch.Tensor) -> torch.Tensor:
        return self.analysis(v)


GAUNT_BACKEND = SphereBackend(
    name="gaunt",
    description="Gaunt tensor products in the 2D Fourier basis with FFTs (Luo et al. 2024; conv and many-body product)",
    options=sphere_options(),
    function_family="gaunt",
    engine_factory=FourierEngine,
)
