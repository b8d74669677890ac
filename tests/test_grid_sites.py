"""The ``grid`` backend's site modules against an independent Gaunt-coefficient reference.

The reference below is built from :func:`mace_gaunt_plugin.so3.gaunt_tensor` (analytic
Gaunt coefficients) with plain einsums and e3nn irreps slicing; it shares no code with
the grid engine or the site modules.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from e3nn import o3
from e3nn.util import jit

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends._sphere_sites import power_projection_rms
from mace_gaunt_plugin.errors import BackendOptionError, UnsupportedIrrepsError
from mace_gaunt_plugin.so3 import gaunt_tensor
from mace_gaunt_plugin.testing import TOLERANCES, default_dtype, random_orthogonal, small_mace_config

GRID = mgp.get_backend("grid")
OPTS = GRID.resolve_options({})

# --------------------------------------------------------------------------- reference


def _to_channels(x: torch.Tensor, irreps: o3.Irreps, lmax: int) -> torch.Tensor:
    """mul_ir layout -> [rows, C, (lmax+1)**2] with zeros for absent degrees."""
    mul = irreps[0].mul
    out = x.new_zeros(x.shape[0], mul, (lmax + 1) ** 2)
    for (m, ir), sl in zip(irreps, irreps.slices()):
        out[:, :, ir.l**2 : (ir.l + 1) ** 2] = x[:, sl].reshape(-1, m, ir.dim)
    return out


def _from_channels(y: torch.Tensor, irreps: o3.Irreps) -> torch.Tensor:
    return torch.cat([y[:, :, ir.l**2 : (ir.l + 1) ** 2].reshape(y.shape[0], -1) for _, ir in irreps], dim=1)


def _degree_of(lmax: int) -> np.ndarray:
    return np.array([l for l in range(lmax + 1) for _ in range(2 * l + 1)])


def reference_conv(x1, x2, weight, irreps1, irreps2, irreps_out, per_l1: bool, edge_index=None):
    """Float64 conv reference: z = a_l3 sum G x1 x2 w (then summed onto receivers)."""
    l1max, l2max, l3max = irreps1.lmax, irreps2.lmax, irreps_out.lmax
    g = torch.from_numpy(gaunt_tensor(l1max, l2max, l3max))
    deg1, deg2, deg3 = _degree_of(l1max), _degree_of(l2max), _degree_of(l3max)
    present1 = {ir.l for _, ir in irreps1}
    present2 = {ir.l for _, ir in irreps2}
    mask1 = torch.tensor([float(d in present1) for d in deg1], dtype=torch.float64)
    mask2 = torch.tensor([float(d in present2) for d in deg2], dtype=torch.float64)
    g = g * mask1[:, None, None] * mask2[None, :, None]
    # a_l3: inverse RMS of an output component for unit-variance inputs and weights
    norm = torch.zeros(len(deg3), dtype=torch.float64)
    for l3 in range(l3max + 1):
        block = g[:, :, l3**2 : (l3 + 1) ** 2]
        s = float((block**2).sum()) / (2 * l3 + 1)
        if s > 0:
            norm[l3**2 : (l3 + 1) ** 2] = 1 / math.sqrt(s)
    ls1 = sorted(present1)
    ls2 = sorted(present2)
    src = x1 if edge_index is None else x1[edge_index[0]]
    a = _to_channels(src, irreps1, l1max)  # [E, C, K1]
    b = _to_channels(x2, irreps2, l2max)[:, 0]  # [E, K2]
    e, c = a.shape[0], a.shape[1]
    i2 = torch.tensor([ls2.index(d) if d in present2 else 0 for d in deg2])
    if per_l1:
        w = weight.reshape(e, c, len(ls1), len(ls2))
        i1 = torch.tensor([ls1.index(d) if d in present1 else 0 for d in deg1])
        w_full = w[:, :, i1][:, :, :, i2]  # [E, C, K1, K2]
        z = torch.einsum("eci,ej,ecij,ijk->eck", a, b, w_full, g)
    else:
        w_full = weight.reshape(e, c, len(ls2))[:, :, i2]  # [E, C, K2]
        z = torch.einsum("eci,ej,ecj,ijk->eck", a, b, w_full, g)
    z = z * norm
    if edge_index is not None:
        z = torch.zeros(x1.shape[0], c, z.shape[2], dtype=z.dtype).index_add(0, edge_index[1], z)
    return _from_channels(z, irreps_out)


def _power_coefficients(a: torch.Tensor, la: int, correlation: int) -> list[torch.Tensor]:
    """Exact SH coefficients of f**nu (degrees <= nu*la) for nu = 1..correlation."""
    out = [a]
    cur = a
    for nu in range(2, correlation + 1):
        g = torch.from_numpy(gaunt_tensor((nu - 1) * la, la, nu * la))
        cur = torch.einsum("nci,ncj,ijk->nck", cur, a, g)
        out.append(cur)
    return out


def reference_product(node_feats, node_attrs, weights, irreps_in, irreps_out, correlation):
    la, lout = irreps_in.lmax, irreps_out.lmax
    rms = power_projection_rms(tuple(range(la + 1)), correlation, tuple(range(lout + 1)))
    w = torch.einsum("ne,ecvl->ncvl", node_attrs, weights)  # [N, C, nu, nL]
    deg = _degree_of(lout)
    present = sorted(ir.l for _, ir in irreps_out)
    total = 0
    for nu, coeff in enumerate(_power_coefficients(node_feats, la, correlation)):
        k = min(coeff.shape[2], (lout + 1) ** 2)
        proj = torch.zeros(*coeff.shape[:2], (lout + 1) ** 2, dtype=coeff.dtype)
        proj[:, :, :k] = coeff[:, :, :k]
        scale = torch.tensor([1 / rms[nu, d] if rms[nu, d] > 0 else 0.0 for d in deg])
        wl = w[:, :, nu, [present.index(d) if d in present else 0 for d in deg]]
        total = total + proj * scale * wl
    return _from_channels(total, irreps_out)


def test_power_projection_rms_matches_coefficient_space_isserlis() -> None:
    """The Funk-Hecke normalisation equals Isserlis' theorem applied to Gaunt tensors."""
    la, lout = 2, 2
    rms = power_projection_rms((0, 1, 2), 3, (0, 1, 2))
    k = (la + 1) ** 2
    g2 = gaunt_tensor(la, la, 2 * la)
    g3 = np.einsum("ijm,mlk->ijlk", g2, gaunt_tensor(2 * la, la, lout))
    # nu = 2: E[(A_i A_j G_ijk)^2] = (sum_i G_iik)^2 + 2 sum_ij G_ijk^2
    e2 = np.einsum("iik->k", g2) ** 2 + 2 * np.einsum("ijk->k", g2**2)
    # nu = 3 (T symmetric in i, j, l): 6 sum T^2 + 9 (sum_i T_iil)(sum_j T_jjl)
    perms = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    t = sum(np.transpose(g3, p + (3,)) for p in perms) / 6
    e3 = 6 * np.einsum("ijlk->k", t**2) + 9 * np.einsum("iilk,jjlk->k", t, t)
    for nu, e in ((1, np.ones(k)), (2, e2), (3, e3)):
        for big_l in range(lout + 1):
            sl = slice(big_l**2, (big_l + 1) ** 2)
            np.testing.assert_allclose(rms[nu - 1, big_l] ** 2, e[sl], rtol=1e-10)


# --------------------------------------------------------------------------- fixtures

CONV_CASES = [
    # (irreps node, irreps edge)
    ("3x0e", "1x0e+1x1o+1x2e"),
    ("3x0e+3x1o+3x2e", "1x0e+1x1o+1x2e+1x3o"),
    ("2x1o+2x0e+2x3o", "1x0e+1x2e+1x1o"),  # unsorted, gaps
]


def _conv_inputs(irreps1, irreps2, module, n_nodes=5, n_edges=9, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n_nodes, irreps1.dim, generator=gen, dtype=dtype)
    vec = torch.randn(n_edges, 3, generator=gen, dtype=dtype)
    x2 = o3.spherical_harmonics(irreps2, vec, normalize=True, normalization="component")
    w = torch.randn(n_edges, module.weight_numel, generator=gen, dtype=dtype)
    edge_index = torch.stack([torch.randint(0, n_nodes, (n_edges,), generator=gen), torch.randint(0, n_nodes, (n_edges,), generator=gen)])
    return x1, vec, x2, w, edge_index


def _build_conv(irreps1: str, irreps2: str, mode: str, target: str = "0e+1o+2e+3o"):
    opts = GRID.resolve_options({"conv_weights": mode})
    i1, i2 = o3.Irreps(irreps1), o3.Irreps(irreps2)
    mul = i1[0].mul
    target_irreps = o3.Irreps([(mul, ir) for _, ir in o3.Irreps(target)])
    out = GRID.conv_irreps_out(i1, i2, target_irreps, opts)
    return GRID.build_conv(i1, i2, out, None, opts), i1, i2, out


@pytest.mark.parametrize("mode", ["l2", "l1l2"])
@pytest.mark.parametrize("irreps1,irreps2", CONV_CASES)
def test_conv_matches_gaunt_reference(irreps1, irreps2, mode, float64) -> None:
    conv, i1, i2, out = _build_conv(irreps1, irreps2, mode)
    x1, _, x2, w, edge_index = _conv_inputs(i1, i2, conv)
    ref_edges = reference_conv(x1[edge_index[0]], x2, w, i1, i2, out, mode == "l1l2")
    got_edges = conv(x1[edge_index[0]], x2, w)
    torch.testing.assert_close(got_edges, ref_edges, rtol=0, atol=1e-10)
    ref_nodes = reference_conv(x1, x2, w, i1, i2, out, mode == "l1l2", edge_index)
    got_nodes = conv(x1, x2, w, edge_index)
    torch.testing.assert_close(got_nodes, ref_nodes, rtol=0, atol=1e-10)
    assert got_nodes.abs().max() > 1e-3  # not trivially zero


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv_float32_and_float64(dtype) -> None:
    with default_dtype(dtype):
        conv, i1, i2, out = _build_conv("4x0e+4x1o+4x2e", "1x0e+1x1o+1x2e+1x3o", "l2")
    assert conv.engine.project.dtype == dtype
    x1, _, x2, w, ei = _conv_inputs(i1, i2, conv)
    ref = reference_conv(x1, x2, w, i1, i2, out, False, ei)
    got = conv(x1.to(dtype), x2.to(dtype), w.to(dtype), ei)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=TOLERANCES[dtype] * 10)


def test_conv_output_scale_is_e3nn_like(float64) -> None:
    """Unit-variance inputs and weights give unit-variance outputs per degree."""
    conv, i1, i2, out = _build_conv("16x0e+16x1o+16x2e", "1x0e+1x1o+1x2e+1x3o", "l2")
    x1, _, x2, w, _ = _conv_inputs(i1, i2, conv, n_nodes=4000, n_edges=4000, seed=3)
    y = conv(x1, x2, w)
    for (_, ir), sl in zip(out, out.slices()):
        assert 0.85 < float(y[:, sl].pow(2).mean()) < 1.15, ir


PRODUCT_CASES = [("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3), ("2x0e+2x1o", "2x0e+2x1o+2x2e", 2), ("2x0e+2x1o+2x2e", "2x0e", 3)]


def _build_product(irreps_in: str, irreps_out: str, correlation: int, n_el: int = 3):
    return GRID.build_product(o3.Irreps(irreps_in), o3.Irreps(irreps_out), correlation, n_el, OPTS)


def _product_inputs(module, n=6, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    k = (module.irreps_in.lmax + 1) ** 2
    feats = torch.randn(n, module.channels, k, generator=gen, dtype=dtype)
    attrs = torch.nn.functional.one_hot(torch.arange(n) % module.num_elements, module.num_elements).to(dtype)
    return feats, attrs


@pytest.mark.parametrize("irreps_in,irreps_out,correlation", PRODUCT_CASES)
def test_product_matches_gaunt_reference(irreps_in, irreps_out, correlation, float64) -> None:
    prod = _build_product(irreps_in, irreps_out, correlation)
    feats, attrs = _product_inputs(prod)
    ref = reference_product(feats, attrs, prod.weights.detach(), prod.irreps_in, prod.irreps_out, correlation)
    got = prod(feats, attrs)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    assert got.abs().max() > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_product_float32_and_float64(dtype) -> None:
    with default_dtype(dtype):
        prod = _build_product("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3)
    feats, attrs = _product_inputs(prod)
    ref = reference_product(feats, attrs, prod.weights.detach().double(), prod.irreps_in, prod.irreps_out, 3)
    got = prod(feats.to(dtype), attrs.to(dtype))
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=TOLERANCES[dtype] * 10)


# --------------------------------------------------------------------------- O(3)


@pytest.mark.parametrize("mode", ["l2", "l1l2"])
def test_conv_equivariant(mode, float64) -> None:
    conv, i1, i2, out = _build_conv("3x0e+3x1o+3x2e", "1x0e+1x1o+1x2e+1x3o", mode)
    x1, vec, x2, w, ei = _conv_inputs(i1, i2, conv)
    for seed, reflect in ((1, False), (2, True)):
        r = random_orthogonal(seed, reflect)
        x2r = o3.spherical_harmonics(i2, vec @ r.T, normalize=True, normalization="component")
        torch.testing.assert_close(x2r, x2 @ i2.D_from_matrix(r).T, rtol=0, atol=1e-12)
        for index in (None, ei):
            rows = x1 if index is not None else x1[ei[0]]
            y = conv(rows, x2, w, index)
            yr = conv(rows @ i1.D_from_matrix(r).T, x2r, w, index)
            torch.testing.assert_close(yr, y @ out.D_from_matrix(r).T, rtol=0, atol=1e-10)


def test_product_equivariant(float64) -> None:
    prod = _build_product("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o+3x2e", 3)
    feats, attrs = _product_inputs(prod)
    sh = o3.Irreps.spherical_harmonics(3)
    for seed, reflect in ((1, False), (2, True)):
        r = random_orthogonal(seed, reflect)
        y = prod(feats, attrs)
        yr = prod(feats @ sh.D_from_matrix(r).T, attrs)
        torch.testing.assert_close(yr, y @ prod.irreps_out.D_from_matrix(r).T, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- autograd, TorchScript


@pytest.mark.parametrize("mode", ["l2", "l1l2"])
def test_conv_gradcheck(mode, float64) -> None:
    conv, i1, i2, out = _build_conv("2x0e+2x1o", "1x0e+1x1o+1x2e", mode, target="0e+1o+2e")
    x1, _, x2, w, ei = _conv_inputs(i1, i2, conv, n_nodes=3, n_edges=4)
    inputs = tuple(t.clone().requires_grad_() for t in (x1, x2, w))
    for index in (None, ei):
        fn = (lambda a, b, c, i=index: conv(a if i is not None else a[ei[0]], b, c, i))
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


def test_product_gradcheck(float64) -> None:
    prod = _build_product("2x0e+2x1o", "2x0e+2x1o", 3, n_el=2)
    feats, attrs = _product_inputs(prod, n=3)
    feats.requires_grad_()
    attrs.requires_grad_()
    fn = lambda a, b: prod(a, b)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (feats, attrs))
    assert torch.autograd.gradgradcheck(fn, (feats, attrs), fast_mode=True)
    # and the per-element weights
    w = prod.weights.detach().clone().requires_grad_()
    by_weights = lambda w_: torch.func.functional_call(prod, {"weights": w_}, (feats.detach(), attrs.detach()))  # noqa: E731
    assert torch.autograd.gradcheck(by_weights, (w,))


def _script_roundtrip(module: torch.nn.Module) -> torch.nn.Module:
    scripted = jit.compile(module)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    return torch.jit.load(buf)


@pytest.mark.parametrize("mode", ["l2", "l1l2"])
def test_conv_torchscript_matches_eager(mode, float64) -> None:
    conv, i1, i2, out = _build_conv("3x0e+3x1o+3x2e", "1x0e+1x1o+1x2e+1x3o", mode)
    x1, _, x2, w, ei = _conv_inputs(i1, i2, conv)
    loaded = _script_roundtrip(conv)
    torch.testing.assert_close(loaded(x1, x2, w, ei), conv(x1, x2, w, ei), rtol=0, atol=1e-12)
    torch.testing.assert_close(loaded(x1[ei[0]], x2, w, None), conv(x1[ei[0]], x2, w), rtol=0, atol=1e-12)


def test_product_torchscript_matches_eager(float64) -> None:
    prod = _build_product("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3)
    feats, attrs = _product_inputs(prod)
    loaded = _script_roundtrip(prod)
    torch.testing.assert_close(loaded(feats, attrs), prod(feats, attrs), rtol=0, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sites_on_cuda_match_cpu(float64) -> None:
    conv, i1, i2, out = _build_conv("3x0e+3x1o+3x2e", "1x0e+1x1o+1x2e+1x3o", "l2")
    x1, _, x2, w, ei = _conv_inputs(i1, i2, conv)
    ref = conv(x1, x2, w, ei)
    got = conv.to("cuda")(x1.cuda(), x2.cuda(), w.cuda(), ei.cuda())
    torch.testing.assert_close(got.cpu(), ref, rtol=0, atol=1e-10)
    prod = _build_product("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3)
    feats, attrs = _product_inputs(prod)
    ref = prod(feats, attrs)
    torch.testing.assert_close(prod.to("cuda")(feats.cuda(), attrs.cuda()).cpu(), ref, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- refusals and options


def test_refuses_non_natural_hidden_irreps() -> None:
    cfg = small_mace_config(hidden_irreps="16x0e+16x1e")
    with pytest.raises(UnsupportedIrrepsError, match=r"'grid'.*16x0e\+16x1e.*natural parity|'grid'.*16x0e\+16x1e.*parity") as info:
        mgp.build_model("grid", **cfg)
    assert info.value.backend == "grid" and "1e" in str(info.value)


def test_refuses_use_so3() -> None:
    with pytest.raises(UnsupportedIrrepsError, match="use_so3"):
        mgp.build_model("grid", **small_mace_config(use_so3=True))


def test_refuses_mixed_multiplicity_and_bad_sites() -> None:
    with pytest.raises(UnsupportedIrrepsError, match="multiplicity"):
        mgp.build_model("grid", **small_mace_config(hidden_irreps="16x0e+8x1o"))
    with pytest.raises(UnsupportedIrrepsError, match="parity"):
        GRID.build_conv(o3.Irreps("4x0e+4x1e"), o3.Irreps("0e+1o"), o3.Irreps("4x0e"), None, OPTS)
    with pytest.raises(UnsupportedIrrepsError, match="parity"):
        GRID.build_product(o3.Irreps("4x0e+4x1e"), o3.Irreps("4x0e"), 2, 2, OPTS)
    with pytest.raises(BackendOptionError, match="sites"):
        GRID.resolve_options({"sites": "everything"})
    with pytest.raises(BackendOptionError, match="conv_weights"):
        GRID.resolve_options({"conv_weights": "l3"})


@pytest.mark.parametrize("sites", ["conv", "product", "both"])
def test_sites_option_chooses_where_grid_runs(sites) -> None:
    # correlation 2, max_ell 2: the stock symmetric contraction (sites="conv") builds fast
    model = mgp.build_model("grid", backend_options={"sites": sites}, **small_mace_config(max_ell=2, correlation=2))
    conv_is_grid = type(model.interactions[1].conv_tp).__name__ == "SphereConv"
    prod_is_grid = type(model.products[1].symmetric_contractions).__name__ == "SphereProduct"
    assert conv_is_grid == (sites in ("conv", "both"))
    assert prod_is_grid == (sites in ("product", "both"))
    assert mgp.backend_of(model) == "grid"


def test_fused_and_unfused_models_agree(bpa_atoms, float64) -> None:
    from mace_gaunt_plugin.testing import atoms_to_batch, model_energy_forces

    cfg = small_mace_config()
    torch.manual_seed(0)
    fused = mgp.build_model("grid", **cfg)
    torch.manual_seed(0)
    unfused = mgp.build_model("grid", backend_options={"fused": False}, **cfg)
    assert all(hasattr(b, "conv_fusion") for b in fused.interactions)
    assert not any(hasattr(b, "conv_fusion") for b in unfused.interactions)
    batch = atoms_to_batch(bpa_atoms[:1], cfg["atomic_numbers"], cfg["r_max"])
    e0, f0 = model_energy_forces(fused, batch)
    e1, f1 = model_energy_forces(unfused, batch)
    torch.testing.assert_close(e1, e0, rtol=0, atol=1e-10)
    torch.testing.assert_close(f1, f0, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- the Gaunt family


def _gaunt_family() -> list[str]:
    return [n for n in mgp.available_backends() if mgp.get_backend(n).function_family == "gaunt" and n != "grid"]


@pytest.mark.parametrize("name", _gaunt_family() or [pytest.param("none", marks=pytest.mark.skip(reason="no other Gaunt-family backend registered"))])
def test_gaunt_family_backends_compute_the_same_function(name, float64) -> None:
    other = mgp.get_backend(name)
    opts = other.resolve_options({})
    i1, i2 = o3.Irreps("3x0e+3x1o+3x2e"), o3.Irreps("1x0e+1x1o+1x2e+1x3o")
    target = o3.Irreps("3x0e+3x1o+3x2e+3x3o")
    out = GRID.conv_irreps_out(i1, i2, target, OPTS)
    assert other.conv_irreps_out(i1, i2, target, opts) == out
    a = GRID.build_conv(i1, i2, out, None, OPTS)
    b = other.build_conv(i1, i2, out, None, opts)
    assert a.weight_numel == b.weight_numel
    x1, _, x2, w, ei = _conv_inputs(i1, i2, a)
    torch.testing.assert_close(b(x1, x2, w, ei), a(x1, x2, w, ei), rtol=0, atol=1e-10)
    torch.manual_seed(0)
    p = _build_product("3x0e+3x1o+3x2e+3x3o", "3x0e+3x1o", 3)
    torch.manual_seed(0)
    q = other.build_product(o3.Irreps("3x0e+3x1o+3x2e+3x3o"), o3.Irreps("3x0e+3x1o"), 3, 3, opts)
    feats, attrs = _product_inputs(p)
    torch.testing.assert_close(q(feats, attrs), p(feats, attrs), rtol=0, atol=1e-10)
