"""``conv_weights="path"`` (``grid``, ``gaunt``): MACE's own conv computed on the sphere.

With natural-parity features MACE's ``uvu`` conv uses exactly the paths with ``l1 + l2 +
l3`` even, where Gaunt coefficients are CG coefficients times a constant. The ``path``
conv has MACE's output irreps and e3nn's weight layout, so with the same radial-MLP
weights it must give e3nn's output (float64, to 1e-10): module by module, whole models,
and through ``switch_backend`` from a stock model. Model properties (O(3), forces,
TorchScript, pickles, empty graphs) run through the conformance kit in
test_model_properties.py and test_empty_inputs.py.
"""

from __future__ import annotations

import pytest
import torch
from e3nn import o3
from e3nn.util import jit
from mace import modules
from mace.modules.irreps_tools import tp_out_irreps_with_instructions

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends._sphere_sites import path_scales
from mace_gaunt_plugin.errors import UnsupportedIrrepsError
from mace_gaunt_plugin.params import count_parameters
from mace_gaunt_plugin.testing import atoms_to_batch, default_dtype, model_energy_forces, small_mace_config, synthetic_molecule

PATH = {"conv_weights": "path"}
# (hidden L, max_ell, channels)
CASES = [(0, 1, 3), (0, 3, 2), (1, 2, 2), (1, 3, 3), (2, 3, 2), (3, 3, 2), (3, 2, 1)]


def _irreps(hidden_l: int, max_ell: int, channels: int) -> tuple[o3.Irreps, o3.Irreps, o3.Irreps]:
    """Node features, edge harmonics and the interaction target, as MACE builds them."""
    node = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(hidden_l + 1)])
    edge = o3.Irreps.spherical_harmonics(max_ell)
    return node, edge, (edge * channels).sort()[0].simplify()


def _e3nn_conv(node: o3.Irreps, edge: o3.Irreps, target: o3.Irreps) -> o3.TensorProduct:
    mid, instructions = tp_out_irreps_with_instructions(node, edge, target)
    return o3.TensorProduct(node, edge, mid, instructions, shared_weights=False, internal_weights=False)


def _path_conv(backend: str, node: o3.Irreps, edge: o3.Irreps, target: o3.Irreps, **options):
    be = mgp.get_backend(backend)
    opts = be.resolve_options({**PATH, **options})
    return be.build_conv(node, edge, be.conv_irreps_out(node, edge, target, opts), None, opts)


def _inputs(node: o3.Irreps, edge: o3.Irreps, weight_numel: int, n_nodes: int = 6, n_edges: int = 13, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n_nodes, node.dim, generator=gen)
    vec = torch.randn(n_edges, 3, generator=gen)
    x2 = o3.SphericalHarmonics(edge, normalize=True, normalization="component")(vec)
    w = torch.randn(n_edges, weight_numel, generator=gen)
    edge_index = torch.randint(0, n_nodes, (2, n_edges), generator=gen)
    return x1, x2, w, edge_index


def _e3nn_fused(tp: o3.TensorProduct, x1, x2, w, edge_index) -> torch.Tensor:
    per_edge = tp(x1[edge_index[0]], x2, w)
    return torch.zeros(x1.shape[0], tp.irreps_out.dim, dtype=x1.dtype).index_add(0, edge_index[1], per_edge)


# --------------------------------------------------------------------------- the conv


@pytest.mark.parametrize("kernel", ["torch", "reference"])
@pytest.mark.parametrize("backend", ["grid", "gaunt"])
@pytest.mark.parametrize("hidden_l,max_ell,channels", CASES)
def test_path_conv_equals_e3nn_conv(hidden_l, max_ell, channels, backend, kernel, float64, one_thread) -> None:
    node, edge, target = _irreps(hidden_l, max_ell, channels)
    tp = _e3nn_conv(node, edge, target)
    conv = _path_conv(backend, node, edge, target, kernel=kernel)
    assert conv.irreps_out == tp.irreps_out and conv.weight_numel == tp.weight_numel
    assert conv.n_paths == len(tp.instructions) and not list(conv.parameters())
    x1, x2, w, edge_index = _inputs(node, edge, tp.weight_numel)
    ref = _e3nn_fused(tp, x1, x2, w, edge_index)
    torch.testing.assert_close(conv(x1, x2, w, edge_index), ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(conv(x1[edge_index[0]], x2, w), tp(x1[edge_index[0]], x2, w), rtol=0, atol=1e-10)
    assert ref.abs().max() > 1e-2


@pytest.mark.parametrize("backend", ["grid", "gaunt"])
@pytest.mark.parametrize("hidden_l,max_ell,channels", [(1, 2, 2), (2, 3, 2)])
def test_path_conv_gradients_equal_e3nn(hidden_l, max_ell, channels, backend, float64, one_thread) -> None:
    """First derivatives (forces, weight gradients) and a second one (force training)."""
    node, edge, target = _irreps(hidden_l, max_ell, channels)
    tp = _e3nn_conv(node, edge, target)
    conv = _path_conv(backend, node, edge, target, kernel="torch")
    x1, x2, w, edge_index = _inputs(node, edge, tp.weight_numel)
    probe = torch.randn(x1.shape[0], tp.irreps_out.dim, dtype=x1.dtype)
    grads = []
    for fn in (lambda a, b, c: _e3nn_fused(tp, a, b, c, edge_index), lambda a, b, c: conv(a, b, c, edge_index)):
        args = [t.clone().requires_grad_(True) for t in (x1, x2, w)]
        first = torch.autograd.grad((fn(*args) * probe).sum(), args, create_graph=True)
        second = torch.autograd.grad(sum((g**2).sum() for g in first), args)
        grads.append([*first, *second])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-9)


def test_path_conv_torchscript_equals_eager(float64, one_thread) -> None:
    node, edge, target = _irreps(2, 3, 2)
    conv = _path_conv("grid", node, edge, target)
    x1, x2, w, edge_index = _inputs(node, edge, conv.weight_numel)
    scripted = jit.script(conv)
    torch.testing.assert_close(scripted(x1, x2, w, edge_index), conv(x1, x2, w, edge_index), rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", ["grid", "gaunt"])
def test_path_conv_without_edges(backend, float64, one_thread) -> None:
    node, edge, target = _irreps(2, 3, 2)
    conv = _path_conv(backend, node, edge, target)
    x1, x2, w, edge_index = _inputs(node, edge, conv.weight_numel, n_edges=0)
    out = conv(x1, x2, w, edge_index)
    assert out.shape == (x1.shape[0], conv.irreps_out.dim) and not out.any()
    assert conv(x1[:0], x2, w).shape == (0, conv.irreps_out.dim)


def test_path_scales_fold_normalisation_and_sign() -> None:
    """``s_p = sqrt(2 l3 + 1) / kappa``: the e3nn CG path equals ``s_p`` times the Gaunt one."""
    from mace_gaunt_plugin.so3 import gaunt_coefficients

    for path in [(0, 0, 0), (1, 1, 0), (1, 1, 2), (1, 2, 1), (2, 2, 2), (1, 3, 2), (3, 3, 2)]:
        (s,) = path_scales([path])
        w3j = o3.wigner_3j(*path, dtype=torch.float64).numpy()
        torch.testing.assert_close(torch.from_numpy(s * gaunt_coefficients(*path)), torch.from_numpy((2 * path[2] + 1) ** 0.5 * w3j), rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match="no Gaunt product"):
        path_scales([(1, 1, 1)])


def test_path_refuses_other_layouts_and_parity(float64) -> None:
    grid = mgp.get_backend("grid")
    opts = grid.resolve_options(PATH)
    node, edge, target = _irreps(1, 2, 2)
    with pytest.raises(UnsupportedIrrepsError, match="MACE's own conv layout"):
        grid.build_conv(node, edge, o3.Irreps("2x0e + 2x1o + 2x2e"), None, opts)  # the l2 layout, not irreps_mid
    with pytest.raises(UnsupportedIrrepsError, match="natural parity"):
        grid.conv_irreps_out(o3.Irreps("2x0e + 2x1e"), edge, target, opts)
    with pytest.raises(mgp.BackendOptionError, match="path"):
        grid.resolve_options({"conv_weights": "paths"})


# --------------------------------------------------------------------------- whole models

CONFIG = dict(hidden_irreps="4x0e + 4x1o + 4x2e", num_interactions=2, correlation=2)


@pytest.fixture(scope="module")
def stock():
    """A float64 stock e3nn model, its config and a batch."""
    cfg = small_mace_config(**CONFIG)
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        model = mgp.build_model("e3nn", **cfg).eval()
        batch = atoms_to_batch([synthetic_molecule(10, cfg["atomic_numbers"])], cfg["atomic_numbers"], cfg["r_max"])
    return model, cfg, batch


def _assert_same_prediction(model, reference, batch) -> None:
    e0, f0 = model_energy_forces(reference, batch)
    e1, f1 = model_energy_forces(model, batch)
    torch.testing.assert_close(e1, e0, rtol=0, atol=1e-10)
    torch.testing.assert_close(f1, f0, rtol=0, atol=1e-10)
    assert f0.abs().max() > 1e-3


@pytest.mark.parametrize("backend", ["grid", "gaunt"])
def test_path_model_with_e3nn_weights_equals_e3nn_model(backend, stock, float64, one_thread) -> None:
    model, cfg, batch = stock
    net = mgp.build_model(backend, backend_options={"sites": "conv", **PATH}, **cfg).eval()
    a, b = dict(model.named_parameters()), dict(net.named_parameters())
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}  # 1:1
    with torch.no_grad():
        for name, p in b.items():
            p.copy_(a[name])
    _assert_same_prediction(net, model, batch)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("backend", ["grid", "gaunt"])
def test_switch_stock_model_to_path_and_back(backend, fused, stock, float64, one_thread) -> None:
    model, _, batch = stock
    switched = mgp.switch_backend(model, backend, {"sites": "conv", "conv_weights": "path", "fused": fused})
    assert mgp.backend_of(switched) == backend and mgp.backend_of(model) == "e3nn"
    assert mgp.backend_options_of(switched)["conv_weights"] == "path"
    assert all(hasattr(block, "conv_fusion") == fused for block in switched.interactions)
    a, b = dict(model.named_parameters()), dict(switched.named_parameters())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _assert_same_prediction(switched, model, batch)
    back = mgp.switch_backend(switched, "e3nn")
    assert mgp.backend_of(back) == "e3nn" and not any(hasattr(block, "conv_fusion") for block in back.interactions)
    _assert_same_prediction(back, model, batch)
    other = mgp.switch_backend(switched, "gaunt" if backend == "grid" else "grid")  # within the family
    _assert_same_prediction(other, model, batch)


def test_switch_stock_model_needs_path_and_conv_only(stock, one_thread) -> None:
    model = stock[0]
    for options in ({}, {"conv_weights": "path"}, {"sites": "conv"}):
        with pytest.raises(mgp.BackendMismatchError, match="compute different functions"):
            mgp.switch_backend(model, "grid", options)


def test_path_parameter_counts_are_mace_counts(one_thread) -> None:
    cfg = small_mace_config(**CONFIG)
    e3nn = count_parameters("e3nn", **cfg)
    assert count_parameters("grid", {"sites": "conv", **PATH}, **cfg) == e3nn
    both = count_parameters("gaunt", PATH, **cfg)
    assert both["conv"] == e3nn["conv"] and both["product"] < e3nn["product"]
    l2 = count_parameters("grid", {"conv_weights": "l2"}, **cfg)
    assert l2["conv"] < both["conv"]


def test_l2_conv_pickled_before_path_existed_loads(float64, one_thread) -> None:
    from mace_gaunt_plugin.backends._sphere_sites import SphereConv

    node, edge, target = _irreps(1, 2, 2)
    grid = mgp.get_backend("grid")
    opts = grid.resolve_options({})
    conv = grid.build_conv(node, edge, grid.conv_irreps_out(node, edge, target, opts), None, opts)
    old = {k: v for k, v in conv.__dict__.items() if k not in ("per_path", "n_paths", "path_groups")}
    old["_buffers"] = {k: v for k, v in conv._buffers.items() if k not in ("path_l1", "path_order")}
    restored = SphereConv.__new__(SphereConv)
    restored.__setstate__(old)
    assert restored.conv_weights() == "l2" and "path_l1" in restored._buffers
    x1, x2, w, edge_index = _inputs(node, edge, conv.weight_numel)
    torch.testing.assert_close(restored(x1, x2, w, edge_index), conv(x1, x2, w, edge_index), rtol=0, atol=0)
    torch.testing.assert_close(jit.script(restored)(x1, x2, w, edge_index), conv(x1, x2, w, edge_index), rtol=0, atol=1e-12)


def test_path_tables_stay_out_of_state_dicts(float64, one_thread) -> None:
    """State dicts (MACE checkpoints, safe model files) of l2/l1l2 models keep their keys."""
    for options in ({}, PATH):
        model = mgp.build_model("grid", backend_options=options, **small_mace_config(**CONFIG))
        assert not [k for k in model.state_dict() if ".path_" in k]


@pytest.mark.parametrize("interaction", sorted(modules.interaction_classes))
def test_switch_is_exact_for_every_interaction_class(interaction, float64, one_thread) -> None:
    cfg = small_mace_config(interaction=interaction, hidden_irreps="4x0e + 4x1o", correlation=2)
    torch.manual_seed(0)
    model = mgp.build_model("e3nn", **cfg).eval()
    batch = atoms_to_batch([synthetic_molecule(8, cfg["atomic_numbers"])], cfg["atomic_numbers"], cfg["r_max"])
    switched = mgp.switch_backend(model, "grid", {"sites": "conv", "conv_weights": "path"})
    assert {type(block.conv_tp).__name__ for block in switched.interactions} == {"SphereConv"}
    _assert_same_prediction(switched, model, batch)
