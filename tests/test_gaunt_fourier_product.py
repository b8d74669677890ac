"""The raw 2D-Fourier Gaunt product (torch.fft) against the analytic Gaunt coefficients."""

from __future__ import annotations

import io

import pytest
import torch

from mace_gaunt_plugin.backends._fourier_ops import FourierAnalysis, FourierGauntProduct, FourierSynthesis, torus_shape
from mace_gaunt_plugin.errors import BackendOptionError
from mace_gaunt_plugin.so3 import gaunt_tensor, sh_dim
from mace_gaunt_plugin.testing import TOLERANCES

LMAX = 6


@pytest.fixture(scope="module")
def gaunt_full() -> dict[tuple[int, int], torch.Tensor]:
    # one reference per (L1, L2) at L3 = L1 + L2; lower L3 are its leading columns
    return {(l1, l2): torch.tensor(gaunt_tensor(l1, l2, l1 + l2)) for l1 in range(LMAX + 1) for l2 in range(LMAX + 1)}


@pytest.mark.parametrize("half", [False, True])
def test_all_degree_combinations_up_to_6(half: bool, gaunt_full: dict, float64: torch.dtype, one_thread: None) -> None:
    gen = torch.Generator().manual_seed(0)
    worst = 0.0
    for l1 in range(LMAX + 1):
        for l2 in range(LMAX + 1):
            x = torch.randn(2, sh_dim(l1), generator=gen)
            y = torch.randn(2, sh_dim(l2), generator=gen)
            ref_full = torch.einsum("na,nb,abc->nc", x, y, gaunt_full[(l1, l2)])
            for l3 in range(l1 + l2 + 1):
                z = FourierGauntProduct(l1, l2, l3, half=half)(x, y)
                err = (z - ref_full[:, : sh_dim(l3)]).abs().max().item()
                assert err < 1e-10, f"L1={l1} L2={l2} L3={l3}: error {err:.2e}"
                worst = max(worst, err)
    assert worst > 0.0  # the comparison did run on non-trivial numbers


@pytest.mark.parametrize("l1,l2,l3", [(1, 1, 1), (2, 1, 2), (3, 2, 4), (6, 5, 6)])
def test_odd_sum_paths_are_zero(l1: int, l2: int, l3: int, float64: torch.dtype) -> None:
    # single-degree inputs and a single-degree output with l1 + l2 + l3 odd: no Gaunt path
    assert (l1 + l2 + l3) % 2 == 1
    gen = torch.Generator().manual_seed(1)
    x = torch.zeros(8, sh_dim(l1))
    y = torch.zeros(8, sh_dim(l2))
    x[:, l1 * l1 :] = torch.randn(8, 2 * l1 + 1, generator=gen)
    y[:, l2 * l2 :] = torch.randn(8, 2 * l2 + 1, generator=gen)
    z = FourierGauntProduct(l1, l2, l3)(x, y)
    assert z[:, l3 * l3 :].abs().max().item() < 1e-13
    assert z.abs().max().item() > 1e-3  # other (even) paths do contribute


def test_float32(gaunt_full: dict) -> None:
    x, y = torch.randn(16, sh_dim(3)), torch.randn(16, sh_dim(3))
    ref = torch.einsum("na,nb,abc->nc", x.double(), y.double(), gaunt_full[(3, 3)][:, :, : sh_dim(3)])
    z = FourierGauntProduct(3, 3, 3)(x, y)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.double(), ref, atol=TOLERANCES[torch.float32], rtol=0)


def test_twice_differentiable(float64: torch.dtype, one_thread: None) -> None:
    prod = FourierGauntProduct(2, 1, 2)
    x = torch.randn(3, sh_dim(2), requires_grad=True)
    y = torch.randn(3, sh_dim(1), requires_grad=True)
    assert torch.autograd.gradcheck(prod, (x, y))
    assert torch.autograd.gradgradcheck(prod, (x, y))


def test_torchscript_saved_and_reloaded_matches_eager(float64: torch.dtype) -> None:
    prod = FourierGauntProduct(3, 2, 3)
    scripted = torch.jit.script(prod)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    x, y = torch.randn(4, 5, sh_dim(3)), torch.randn(4, 5, sh_dim(2))
    torch.testing.assert_close(loaded(x, y), prod(x, y), atol=1e-14, rtol=0)


def test_synthesis_split_and_analysis_roundtrip(float64: torch.dtype) -> None:
    n_theta, n_phi = torus_shape(4, 4, 4)
    degrees = (0, 2, 3)
    x = torch.randn(5, 1 + 5 + 7)
    whole = FourierSynthesis(degrees, n_theta, n_phi)(x)
    split = FourierSynthesis(degrees, n_theta, n_phi, split=True)(x)
    assert split.shape == (5, 3, n_theta * n_phi)
    torch.testing.assert_close(split.sum(1), whole, atol=1e-13, rtol=0)
    # analysis of a degree <= 3 function onto degrees (0, 2, 3) is the identity there
    torch.testing.assert_close(FourierAnalysis(degrees, n_theta, n_phi)(whole), x, atol=1e-13, rtol=0)


def test_half_torus_rows_repeat_the_sphere(float64: torch.dtype) -> None:
    n_theta, n_phi = torus_shape(5, 3, 3, even_phi=True)
    x = torch.randn(4, 16)
    full = FourierSynthesis(range(4), n_theta, n_phi)(x).reshape(4, n_theta, n_phi)
    half = FourierSynthesis(range(4), n_theta, n_phi, half=True)(x)
    rows = n_theta // 2 + 1
    torch.testing.assert_close(half, full[:, :rows].reshape(4, -1), atol=1e-13, rtol=0)
    # rows theta > pi repeat rows 2 pi - theta, half a turn away in phi
    mirrored = full[:, rows:].flip(1).roll(-(n_phi // 2), dims=2)
    torch.testing.assert_close(mirrored, full[:, 1 : n_theta - rows + 1], atol=1e-13, rtol=0)
    from_half = FourierAnalysis(range(4), n_theta, n_phi, half=True)(half)
    torch.testing.assert_close(from_half, x, atol=1e-13, rtol=0)


def test_too_small_grid_is_refused() -> None:
    with pytest.raises(BackendOptionError, match="torus grid"):
        FourierSynthesis((0, 1, 2, 3), 5, 9)
    with pytest.raises(BackendOptionError, match="even n_phi"):
        FourierAnalysis((0, 1), 7, 7, half=True)
