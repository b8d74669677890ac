"""``product_basis="cp"`` of the Gaunt-family product site: a CP-rank-R symmetric
contraction (per order ``nu >= 2``, a weighted sum of ``product_rank`` products of
differently reweighted copies of ``A``), against a dense coefficient-space reference of
the same formula built from analytic Gaunt coefficients; at R = 1 it is ``factors``, and
with equal factors ``power``; O(3)-exact, differentiable, scriptable, reloads, counts its
parameters. Whole models with the option run the conformance kit in
tests/test_model_properties.py (OPTION_CASES)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from e3nn import o3
from e3nn.util import jit

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends._sphere_sites import factor_count, power_projection_rms, product_terms
from mace_gaunt_plugin.errors import BackendOptionError
from mace_gaunt_plugin.params import count_parameters
from mace_gaunt_plugin.so3 import gaunt_tensor
from mace_gaunt_plugin.testing import random_orthogonal, small_mace_config

CASES = [("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3, 3), ("2x0e+2x1o", "2x0e+2x1o+2x2e", 2, 2), ("2x0e+2x1o+2x2e", "2x0e", 3, 4)]
GAUNT_FAMILY = [name for name in ("grid", "gaunt") if name in mgp.available_backends()]


def _degree_of(lmax: int) -> torch.Tensor:
    return torch.tensor([l for l in range(lmax + 1) for _ in range(2 * l + 1)])


def _gaunt_chain(factors: list[torch.Tensor], la: int) -> torch.Tensor:
    """SH coefficients of the pointwise product of ``factors`` (each [N, C, (la+1)^2]), dense einsums."""
    cur = factors[0]
    for k, g in enumerate(factors[1:], start=1):
        cur = torch.einsum("nci,ncj,ijk->nck", cur, g, torch.from_numpy(gaunt_tensor(k * la, la, (k + 1) * la)))
    return cur


def reference_cp_product(prod: torch.nn.Module, feats: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """``w_1,L A_L / rms_1,L + sum_{nu>=2} sum_r w_nu,r,L Proj_L(g_nu,r,1 ... g_nu,r,nu) / rms_nu,L``."""
    la, lout, corr, rank = prod.irreps_in.lmax, prod.irreps_out.lmax, prod.correlation, prod.rank
    r = torch.einsum("ne,efcl->nfcl", attrs, prod.factor_weights.detach())[..., _degree_of(la)]  # [N, F, C, K_in]
    coefficients, nus, first = [feats], [1], 0
    for nu in range(2, corr + 1):
        for _ in range(rank):
            coefficients.append(_gaunt_chain([feats * r[:, first + k] for k in range(nu)], la))
            nus.append(nu)
            first += nu
    rms = power_projection_rms(tuple(range(la + 1)), corr, tuple(range(lout + 1)))
    w = torch.einsum("ne,ectl->nctl", attrs, prod.weights.detach())
    deg = _degree_of(lout).tolist()
    present = sorted(ir.l for _, ir in prod.irreps_out)
    total = 0
    for t, (nu, coeff) in enumerate(zip(nus, coefficients)):
        k = min(coeff.shape[2], (lout + 1) ** 2)
        proj = torch.zeros(*coeff.shape[:2], (lout + 1) ** 2, dtype=coeff.dtype)
        proj[:, :, :k] = coeff[:, :, :k]
        scale = torch.tensor([1 / rms[nu - 1, d] if rms[nu - 1, d] > 0 else 0.0 for d in deg])
        total = total + proj * scale * w[:, :, t, [present.index(d) if d in present else 0 for d in deg]]
    return torch.cat([total[:, :, ir.l**2 : (ir.l + 1) ** 2].reshape(total.shape[0], -1) for _, ir in prod.irreps_out], dim=1)


def _product(name: str, irreps_in: str, irreps_out: str, correlation: int, n_el: int = 3, **options):
    backend = mgp.get_backend(name)
    opts = backend.resolve_options({"product_basis": "cp", **options})
    return backend.build_product(o3.Irreps(irreps_in), o3.Irreps(irreps_out), correlation, n_el, opts)


def _inputs(prod: torch.nn.Module, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, prod.channels, (prod.irreps_in.lmax + 1) ** 2, generator=gen)
    attrs = torch.nn.functional.one_hot(torch.arange(n) % prod.num_elements, prod.num_elements).to(feats)
    return feats, attrs


@pytest.mark.parametrize("name", GAUNT_FAMILY)
@pytest.mark.parametrize("irreps_in,irreps_out,correlation,rank", CASES)
def test_cp_matches_the_dense_reference(name, irreps_in, irreps_out, correlation, rank, float64) -> None:
    prod = _product(name, irreps_in, irreps_out, correlation, product_rank=rank)
    n_in = len(prod.degrees_in)
    assert prod.factor_weights.shape == (3, factor_count(correlation, rank), prod.channels, n_in)
    assert prod.weights.shape == (3, prod.channels, product_terms(correlation, rank), len(prod.degrees_out))
    feats, attrs = _inputs(prod)
    got = prod(feats, attrs)
    torch.testing.assert_close(got, reference_cp_product(prod, feats, attrs), rtol=0, atol=1e-10)
    assert got.abs().max() > 1e-2


@pytest.mark.parametrize("name", GAUNT_FAMILY)
def test_rank_one_is_factors_and_equal_factors_are_power(name, float64) -> None:
    args = ("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3)
    cp = _product(name, *args, product_rank=1)
    factors = _product(name, *args, product_basis="factors")
    power = _product(name, *args, product_basis="power")
    factors.load_state_dict(cp.state_dict())
    feats, attrs = _inputs(cp)
    torch.testing.assert_close(cp(feats, attrs), factors(feats, attrs), rtol=0, atol=0)
    with torch.no_grad():
        cp.factor_weights.fill_(1.0)
    power.load_state_dict({k: v for k, v in cp.state_dict().items() if k != "factor_weights"})
    torch.testing.assert_close(cp(feats, attrs), power(feats, attrs), rtol=0, atol=1e-12)
    assert "product_basis=cp, product_rank=1" in repr(cp)


def test_cp_starts_with_distinct_unit_scale_factors(float64) -> None:
    """The factors of a term start apart (equal ones would stay equal under training) with
    mean square 1, and unit-variance inputs give outputs of order one."""
    torch.manual_seed(0)
    prod = _product("grid", "16x0e+16x1o+16x2e+16x3o", "16x0e+16x1o", 3, n_el=2, product_rank=4)
    r = prod.factor_weights.detach()
    assert (r[:, 0] - r[:, 1]).abs().min() > 0 and abs(float((r**2).mean()) - 1.0) < 0.05
    feats, attrs = _inputs(prod, n=64)
    std = float(prod(feats, attrs).detach().std())
    assert 0.3 < std < 3.0, std


def test_cp_is_o3_equivariant_and_differentiable(float64) -> None:
    prod = _product("grid", "3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o+3x2e", 3, product_rank=2)
    feats, attrs = _inputs(prod)
    sh = o3.Irreps.spherical_harmonics(3)
    for seed, reflect in ((1, False), (2, True)):
        r = random_orthogonal(seed, reflect)
        torch.testing.assert_close(prod(feats @ sh.D_from_matrix(r).T, attrs), prod(feats, attrs) @ prod.irreps_out.D_from_matrix(r).T, rtol=0, atol=1e-10)
    small = _product("grid", "2x0e+2x1o", "2x0e+2x1o", 3, n_el=2, product_rank=2)
    a, b = _inputs(small, n=3)
    fn = lambda x: small(x, b)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a.requires_grad_(),))
    assert torch.autograd.gradgradcheck(fn, (a,), fast_mode=True)
    by_params = lambda r, w: torch.func.functional_call(small, {"factor_weights": r, "weights": w}, (a.detach(), b))  # noqa: E731
    params = (small.factor_weights.detach().clone().requires_grad_(), small.weights.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(by_params, params)


def test_cp_script_and_pickle(float64) -> None:
    prod = _product("gaunt", "3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3, product_rank=3)
    feats, attrs = _inputs(prod)
    buf = io.BytesIO()
    torch.jit.save(jit.compile(copy.deepcopy(prod)), buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(feats, attrs), prod(feats, attrs), rtol=0, atol=1e-12)
    torch.testing.assert_close(pickle.loads(pickle.dumps(prod))(feats, attrs), prod(feats, attrs), rtol=0, atol=0)


def test_a_factors_product_pickled_before_cp_still_loads(float64) -> None:
    prod = _product("grid", "3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3, product_basis="factors")
    state = prod.__getstate__()
    for key in ("rank", "n_terms"):
        state.pop(key)
    old = type(prod).__new__(type(prod))
    old.__setstate__(state)
    feats, attrs = _inputs(prod)
    torch.testing.assert_close(old(feats, attrs), prod(feats, attrs), rtol=0, atol=0)
    assert old.rank == 1 and old.n_terms == 3


@pytest.mark.parametrize("rank", [1, 4])
def test_cp_parameter_count(rank) -> None:
    cfg = small_mace_config()
    power = count_parameters("grid", {}, **cfg)
    cp = count_parameters("grid", {"product_basis": "cp", "product_rank": rank}, **cfg)
    n_el, channels, corr = len(cfg["atomic_numbers"]), cfg["hidden_irreps"].count("0e"), cfg["correlation"]
    n_in = 4  # A: 0e + 1o + 2e + 3o
    n_out = [2, 1]  # product outputs per layer: 0e + 1o, then 0e (the last layer)
    extra = sum(n_el * factor_count(corr, rank) * channels * n_in + n_el * channels * (product_terms(corr, rank) - corr) * k for k in n_out)
    assert cp["product"] - power["product"] == extra and cp["total"] - power["total"] == extra


def test_bad_ranks_are_refused() -> None:
    grid = mgp.get_backend("grid")
    assert grid.resolve_options({"product_rank": "8"})["product_rank"] == 8
    for bad in (0, -1, "two", 2.5, True):
        with pytest.raises(BackendOptionError, match="product_rank"):
            grid.resolve_options({"product_basis": "cp", "product_rank": bad})
    assert grid.resolve_options({})["product_rank"] == 4
