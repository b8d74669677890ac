"""``product_basis="factors"`` of the Gaunt-family product site: products of differently
reweighted copies of ``A``, against an independent coefficient-space reference built from
analytic Gaunt coefficients; it starts as the power basis, is O(3)-exact, differentiable,
scriptable, reloads, and counts its parameters. Whole models with the option run the
conformance kit in tests/test_model_properties.py (OPTION_CASES)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from e3nn import o3
from e3nn.util import jit

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends._sphere_sites import factor_count, power_projection_rms
from mace_gaunt_plugin.errors import BackendOptionError
from mace_gaunt_plugin.params import count_parameters
from mace_gaunt_plugin.so3 import gaunt_tensor
from mace_gaunt_plugin.testing import random_orthogonal, small_mace_config

CASES = [("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3), ("2x0e+2x1o", "2x0e+2x1o+2x2e", 2), ("2x0e+2x1o+2x2e", "2x0e", 3)]
GAUNT_FAMILY = [name for name in ("grid", "gaunt") if name in mgp.available_backends()]


def _degree_of(lmax: int) -> torch.Tensor:
    return torch.tensor([l for l in range(lmax + 1) for _ in range(2 * l + 1)])


def _gaunt_chain(factors: list[torch.Tensor], la: int) -> torch.Tensor:
    """SH coefficients of the pointwise product of the functions ``factors`` (each [N, C, (la+1)^2])."""
    cur = factors[0]
    for k, g in enumerate(factors[1:], start=1):
        cur = torch.einsum("nci,ncj,ijk->nck", cur, g, torch.from_numpy(gaunt_tensor(k * la, la, (k + 1) * la)))
    return cur


def reference_factors_product(prod: torch.nn.Module, feats: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """``sum_nu w_nu,L Proj_L(g_nu,1 ... g_nu,nu) / rms_nu,L`` in coefficient space (float64)."""
    la, lout, corr = prod.irreps_in.lmax, prod.irreps_out.lmax, prod.correlation
    r = torch.einsum("ne,efcl->nfcl", attrs, prod.factor_weights.detach())[..., _degree_of(la)]  # [N, F, C, K_in]
    coefficients, first = [feats], 0
    for nu in range(2, corr + 1):
        coefficients.append(_gaunt_chain([feats * r[:, first + k] for k in range(nu)], la))
        first += nu
    rms = power_projection_rms(tuple(range(la + 1)), corr, tuple(range(lout + 1)))
    w = torch.einsum("ne,ecvl->ncvl", attrs, prod.weights.detach())
    deg = _degree_of(lout).tolist()
    present = sorted(ir.l for _, ir in prod.irreps_out)
    total = 0
    for nu, coeff in enumerate(coefficients):
        k = min(coeff.shape[2], (lout + 1) ** 2)
        proj = torch.zeros(*coeff.shape[:2], (lout + 1) ** 2, dtype=coeff.dtype)
        proj[:, :, :k] = coeff[:, :, :k]
        scale = torch.tensor([1 / rms[nu, d] if rms[nu, d] > 0 else 0.0 for d in deg])
        total = total + proj * scale * w[:, :, nu, [present.index(d) if d in present else 0 for d in deg]]
    return torch.cat([total[:, :, ir.l**2 : (ir.l + 1) ** 2].reshape(total.shape[0], -1) for _, ir in prod.irreps_out], dim=1)


def _product(name: str, irreps_in: str, irreps_out: str, correlation: int, basis: str = "factors", n_el: int = 3):
    backend = mgp.get_backend(name)
    return backend.build_product(o3.Irreps(irreps_in), o3.Irreps(irreps_out), correlation, n_el, backend.resolve_options({"product_basis": basis}))


def _inputs(prod: torch.nn.Module, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, prod.channels, (prod.irreps_in.lmax + 1) ** 2, generator=gen)
    attrs = torch.nn.functional.one_hot(torch.arange(n) % prod.num_elements, prod.num_elements).to(feats)
    return feats, attrs


def _randomise_factors(prod: torch.nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        prod.factor_weights.copy_(1 + 0.5 * torch.randn(prod.factor_weights.shape, generator=gen))


@pytest.mark.parametrize("name", GAUNT_FAMILY)
@pytest.mark.parametrize("irreps_in,irreps_out,correlation", CASES)
def test_factors_match_the_coefficient_space_reference(name, irreps_in, irreps_out, correlation, float64) -> None:
    prod = _product(name, irreps_in, irreps_out, correlation)
    assert prod.factor_weights.shape == (3, factor_count(correlation), prod.channels, len(prod.degrees_in))
    _randomise_factors(prod)
    feats, attrs = _inputs(prod)
    got = prod(feats, attrs)
    torch.testing.assert_close(got, reference_factors_product(prod, feats, attrs), rtol=0, atol=1e-10)
    power = _product(name, irreps_in, irreps_out, correlation, basis="power")
    power.load_state_dict({k: v for k, v in prod.state_dict().items() if k != "factor_weights"})
    if correlation > 1:  # the reweighted factors give another function than the power basis
        assert (got - power(feats, attrs)).abs().max() > 1e-3


@pytest.mark.parametrize("name", GAUNT_FAMILY)
def test_a_fresh_factors_product_is_the_power_basis(name, float64) -> None:
    prod = _product(name, "3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3)
    power = _product(name, "3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3, basis="power")
    assert "factor_weights" not in power.state_dict()  # the power basis keeps the state dict of older models
    power.load_state_dict({k: v for k, v in prod.state_dict().items() if k != "factor_weights"})
    feats, attrs = _inputs(prod)
    torch.testing.assert_close(prod(feats, attrs), power(feats, attrs), rtol=0, atol=1e-12)
    assert "product_basis=factors" in repr(prod) and "product_basis=power" in repr(power)


def test_factors_are_o3_equivariant_and_differentiable(float64) -> None:
    prod = _product("grid", "3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o+3x2e", 3)
    _randomise_factors(prod)
    feats, attrs = _inputs(prod)
    sh = o3.Irreps.spherical_harmonics(3)
    for seed, reflect in ((1, False), (2, True)):
        r = random_orthogonal(seed, reflect)
        torch.testing.assert_close(prod(feats @ sh.D_from_matrix(r).T, attrs), prod(feats, attrs) @ prod.irreps_out.D_from_matrix(r).T, rtol=0, atol=1e-10)
    small = _product("grid", "2x0e+2x1o", "2x0e+2x1o", 3, n_el=2)
    _randomise_factors(small)
    a, b = _inputs(small, n=3)
    fn = lambda x: small(x, b)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a.requires_grad_(),))
    assert torch.autograd.gradgradcheck(fn, (a,), fast_mode=True)
    by_factors = lambda w: torch.func.functional_call(small, {"factor_weights": w}, (a.detach(), b))  # noqa: E731
    assert torch.autograd.gradcheck(by_factors, (small.factor_weights.detach().clone().requires_grad_(),))


def test_factors_script_and_pickle(float64) -> None:
    prod = _product("grid", "3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3)
    _randomise_factors(prod)
    feats, attrs = _inputs(prod)
    buf = io.BytesIO()
    torch.jit.save(jit.compile(copy.deepcopy(prod)), buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(feats, attrs), prod(feats, attrs), rtol=0, atol=1e-12)
    torch.testing.assert_close(pickle.loads(pickle.dumps(prod))(feats, attrs), prod(feats, attrs), rtol=0, atol=0)


def test_a_power_product_pickled_before_the_option_still_loads(float64) -> None:
    prod = _product("grid", "3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3, basis="power")
    state = prod.__getstate__()
    for key in ("product_basis", "n_factors", "n_in", "k_in"):
        state.pop(key)
    state["_parameters"].pop("factor_weights")
    state["_buffers"].pop("in_degree_index")
    old = type(prod).__new__(type(prod))
    old.__setstate__(state)
    feats, attrs = _inputs(prod)
    torch.testing.assert_close(old(feats, attrs), prod(feats, attrs), rtol=0, atol=0)
    assert old.product_basis == "power" and old.factor_weights is None


def test_parameter_count_and_bad_values() -> None:
    cfg = small_mace_config()
    power = count_parameters("grid", {}, **cfg)
    factors = count_parameters("grid", {"product_basis": "factors"}, **cfg)
    n_elements, channels, n_in = len(cfg["atomic_numbers"]), cfg["hidden_irreps"].count("0e"), 4  # A: 0e+1o+2e+3o
    per_layer = n_elements * factor_count(cfg["correlation"]) * channels * n_in
    assert factors["product"] - power["product"] == cfg["num_interactions"] * per_layer
    assert factors["total"] - power["total"] == cfg["num_interactions"] * per_layer
    with pytest.raises(BackendOptionError, match="product_basis"):
        mgp.get_backend("grid").resolve_options({"product_basis": "tensor"})
