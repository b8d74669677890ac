"""Torch kernels of the 2D Fourier route (Luo et al. 2024): real-SH coefficients to samples
on the uniform (theta, phi) torus grid and back, with ``torch.fft``.

A pointwise product of samples on the torus grid is a (circular) 2D convolution of the
Fourier coefficients; the grid sizes from :func:`~mace_gaunt_plugin.so3.minimal_torus`
make it the exact, zero-padded linear convolution. All tables are buffers (they follow
``.to()``), every module is TorchScript-able and twice differentiable.
"""

from typing import Sequence

import numpy as np
import torch

from ..errors import BackendOptionError
from ..so3 import fourier_coefficients, fourier_projection, minimal_torus

__all__ = ["FourierSynthesis", "FourierAnalysis", "FourierGauntProduct", "half_rows", "torus_shape"]


def torus_shape(product_degree: int, lmax_out: int, lmax_factors: int, even_phi: bool = False) -> tuple[int, int]:
    """``(n_theta, n_phi)`` of the smallest torus grid on which products of total degree
    ``product_degree`` of factors of degree ``<= lmax_factors`` project exactly onto
    degrees ``<= lmax_out``, with every factor frequency in its own rfft bin
    (``even_phi``: the smallest even ``n_phi``, which the half-torus storage needs)."""
    grid = minimal_torus(product_degree, lmax_out)
    n_phi = max(grid.n_phi, 2 * lmax_factors + 1)
    return grid.n_theta, n_phi + (n_phi % 2 if even_phi else 0)


def _check_half(n_phi: int, what: str) -> None:
    if n_phi % 2:
        raise BackendOptionError(f"{what}: half-torus storage needs an even n_phi, got {n_phi}; use torus_shape(..., even_phi=True)")


def half_rows(n_theta: int) -> int:
    """Rows ``theta_j = 2 pi j / n_theta <= pi`` of the torus grid: ``n_theta // 2 + 1``."""
    return n_theta // 2 + 1


def _check_grid(lmax: int, n_theta: int, n_phi: int, what: str) -> None:
    if n_theta < 2 * lmax + 1 or n_phi < 2 * lmax + 1:
        raise BackendOptionError(
            f"{what}: a {n_theta} x {n_phi} torus grid cannot hold degree {lmax} "
            f"(needs n_theta, n_phi >= {2 * lmax + 1}); size it with torus_shape()"
        )


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``x [..., K]`` as ``[B, K]`` with at least one row: torch's CPU FFT (MKL) refuses a
    zero-size batch ("Inconsistent configuration parameters"), so an empty batch (a graph
    without edges, zero atoms) gets one zero row, which the caller slices off again with
    ``[: x.numel() // x.shape[-1]]``. The result is the same empty tensor, still in the graph."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] == 0:
        flat = torch.cat([flat, flat.new_zeros(1, flat.shape[1])], dim=0)
    return flat


def _components(degrees: Sequence[int]) -> list[int]:
    return [l * l + m for l in degrees for m in range(2 * l + 1)]


class FourierSynthesis(torch.nn.Module):
    """Real-SH coefficients to samples on the torus grid: the sparse change of basis to the
    half spectrum ``v >= 0`` (one dense GEMM with the mostly-zero table, faster than a
    sparse kernel at these sizes), an inverse FFT in theta and an inverse real FFT in phi.

    ``x [..., K]`` (components of ``degrees``, ascending, e3nn order) gives
    ``[..., P]`` with ``P = n_theta * n_phi`` (theta-major) or, with ``split=True``, one
    function per degree, ``[..., len(degrees), P]``. With ``half=True`` only the rows
    ``theta <= pi`` are kept (``P = half_rows(n_theta) * n_phi``): the others repeat them,
    since the torus covers the sphere twice (see :class:`FourierAnalysis`).
    """

    lmax: int
    n_theta: int
    n_phi: int
    n_rows: int
    n_split: int
    split: bool
    num_points: int

    def __init__(self, degrees: Sequence[int], n_theta: int, n_phi: int, split: bool = False, half: bool = False) -> None:
        super().__init__()
        degrees = tuple(degrees)
        lmax = max(degrees)
        _check_grid(lmax, n_theta, n_phi, "FourierSynthesis")
        if half:
            _check_half(n_phi, "FourierSynthesis")
        self.lmax, self.n_theta, self.n_phi = lmax, n_theta, n_phi
        self.n_rows = half_rows(n_theta) if half else n_theta
        self.split = bool(split)
        self.n_split = len(degrees) if split else 1
        self.num_points = self.n_rows * n_phi
        f = fourier_coefficients(lmax)[_components(degrees)]  # [K, u + lmax, v + lmax]
        spec = np.zeros((f.shape[0], self.n_split, n_theta, lmax + 1), dtype=np.complex128)
        block = np.repeat(np.arange(len(degrees)), [2 * l + 1 for l in degrees]) if split else np.zeros(f.shape[0], int)
        for u in range(-lmax, lmax + 1):
            spec[np.arange(f.shape[0]), block, u % n_theta, :] = f[:, u + lmax, lmax:]
        table = np.ascontiguousarray(np.stack([spec.real, spec.imag], axis=-1).reshape(f.shape[0], -1))
        self.register_buffer("to_spectrum", torch.tensor(table, dtype=torch.get_default_dtype()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        flat = _rows(x)
        spec = torch.matmul(flat, self.to_spectrum).reshape(flat.shape[0], self.n_split, self.n_theta, self.lmax + 1, 2)
        spec = torch.fft.ifft(torch.view_as_complex(spec), dim=-2, norm="forward")
        if self.n_rows < self.n_theta:
            spec = spec[..., : self.n_rows, :]
        values = torch.fft.irfft(spec, n=self.n_phi, dim=-1, norm="forward")[: x.numel() // x.shape[-1]]
        if not self.split:
            return values.reshape(shape + (self.num_points,))
        return values.reshape(shape + (self.n_split, self.num_points))


class FourierAnalysis(torch.nn.Module):
    """Samples on the torus grid to the real-SH coefficients ``[..., K]`` of
    ``int_{S^2} h Y_lm`` for ``degrees`` (ascending, e3nn order): a real FFT in phi (only
    ``|v| <= lmax`` kept), an FFT in theta, then the half-range projection (one GEMM).

    Input ``[..., n_theta * n_phi]``, or with ``half=True`` only the rows ``theta <= pi``,
    ``[..., half_rows(n_theta) * n_phi]``: row ``j > n_theta / 2`` equals row
    ``n_theta - j`` half a turn away in phi (the extension
    ``h(2 pi - theta, phi) = h(theta, phi + pi)``), so its phi spectrum is that row's
    times ``(-1)^v`` (needs an even ``n_phi``); the missing rows are rebuilt that way
    after the phi FFT, on the small spectrum.
    """

    lmax: int
    n_theta: int
    n_phi: int
    n_rows: int
    n_mirror: int
    half: bool

    def __init__(self, degrees: Sequence[int], n_theta: int, n_phi: int, half: bool = False) -> None:
        super().__init__()
        degrees = tuple(degrees)
        lmax = max(degrees)
        _check_grid(lmax, n_theta, n_phi, "FourierAnalysis")
        if half:
            _check_half(n_phi, "FourierAnalysis")
        self.lmax, self.n_theta, self.n_phi = lmax, n_theta, n_phi
        self.half = bool(half)
        self.n_rows = half_rows(n_theta) if half else n_theta
        self.n_mirror = n_theta - self.n_rows  # rows n_rows..n_theta-1 mirror rows n_mirror..1
        sign = (-1.0) ** np.arange(lmax + 1)  # half a turn in phi, per frequency v
        self.register_buffer("mirror_sign", torch.tensor(sign, dtype=torch.get_default_dtype()))
        umax = n_theta // 2
        z = fourier_projection(lmax, umax)[_components(degrees)]  # [K, u + umax, v + lmax]
        weight = np.where(np.arange(lmax + 1) == 0, 1.0, 2.0)  # (u, v) and (-u, -v) pair up
        proj = np.zeros((lmax + 1, n_theta, z.shape[0]), dtype=np.complex128)  # v-major, like the spectrum
        for k in range(n_theta):
            u = k if k <= umax else k - n_theta  # bin k of the theta FFT holds frequency u
            proj[:, k] = (z[:, u + umax, lmax:] * weight[None, :]).T
        # Re(H Z) = Re(H) Re(Z) - Im(H) Im(Z), with H stored as (re, im) pairs
        table = np.stack([proj.real, -proj.imag], axis=2).reshape(-1, z.shape[0])
        self.register_buffer("from_spectrum", torch.tensor(np.ascontiguousarray(table), dtype=torch.get_default_dtype()))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        shape = values.shape[:-1]
        flat = _rows(values)
        grid = flat.reshape(flat.shape[0], self.n_rows, self.n_phi)
        # [..., v, theta]: the theta FFT then runs along contiguous memory
        spec = torch.fft.rfft(grid, dim=-1, norm="forward")[..., : self.lmax + 1].transpose(-1, -2)
        if self.n_mirror > 0:
            mirror = spec[..., 1 : self.n_mirror + 1].flip(-1) * self.mirror_sign[:, None]
            spec = torch.cat([spec, mirror], dim=-1)
        spec = torch.fft.fft(spec, dim=-1, norm="forward")
        pairs = torch.view_as_real(spec).reshape(flat.shape[0], self.n_theta * (self.lmax + 1) * 2)
        return torch.matmul(pairs[: values.numel() // values.shape[-1]], self.from_spectrum).reshape(shape + (self.from_spectrum.shape[1],))


class FourierGauntProduct(torch.nn.Module):
    """The Gaunt product ``z_lm = int_{S^2} f g Y_lm`` of ``f = sum x_lm Y_lm`` (degrees
    ``<= lmax1``) and ``g = sum y_lm Y_lm`` (degrees ``<= lmax2``), for degrees
    ``<= lmax3``, as a zero-padded 2D FFT convolution in the Fourier basis.

    Shapes: ``x [..., (lmax1+1)**2]``, ``y [..., (lmax2+1)**2]`` (broadcasting leading
    dimensions) to ``z [..., (lmax3+1)**2]``. ``half=True`` multiplies on the rows
    ``theta <= pi`` only (the rest of the torus repeats them); same result.

    Examples
    --------
    >>> import torch
    >>> prod = FourierGauntProduct(1, 1, 2)
    >>> prod(torch.randn(5, 4), torch.randn(5, 4)).shape
    torch.Size([5, 9])
    """

    def __init__(self, lmax1: int, lmax2: int, lmax3: int, half: bool = False) -> None:
        super().__init__()
        for l in (lmax1, lmax2, lmax3):
            if l < 0:
                raise BackendOptionError(f"FourierGauntProduct: degrees must be >= 0, got {(lmax1, lmax2, lmax3)}")
        n_theta, n_phi = torus_shape(lmax1 + lmax2, lmax3, max(lmax1, lmax2), even_phi=half)
        self.synth1 = FourierSynthesis(range(lmax1 + 1), n_theta, n_phi, half=half)
        self.synth2 = FourierSynthesis(range(lmax2 + 1), n_theta, n_phi, half=half)
        self.analysis = FourierAnalysis(range(lmax3 + 1), n_theta, n_phi, half=half)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.analysis(self.synth1(x) * self.synth2(y))
