"""``conv_weights="node_path"`` (``grid``, ``gaunt``): ``l1l2`` radial weights, MACE's per-path
outputs (the per-path weights are applied at the node by the linear after the conv).

With each path's weight set to its degree pair's, e3nn's ``uvu`` conv (MACE's own) is the
oracle: ``node_path`` must equal it (float64, to 1e-10), and summing its path blocks with
the ``l1l2`` normalisation must give the ``l1l2`` conv. Plus derivatives, O(3), TorchScript,
pickles, the receiver-slot packing and parameter counts; whole models with the option run
the conformance kit in tests/test_model_properties.py (OPTION_CASES).
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from e3nn import o3
from e3nn.util import jit
from mace.modules.irreps_tools import tp_out_irreps_with_instructions

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends._sphere_sites import conv_normalisation, mace_conv_paths, node_path_slots, path_scales, use_primitives_in_torchscript
from mace_gaunt_plugin.params import count_parameters
from mace_gaunt_plugin.testing import random_orthogonal, small_mace_config

NODE_PATH = {"conv_weights": "node_path"}
# (hidden L, max_ell, channels)
CASES = [(0, 1, 3), (0, 3, 2), (1, 2, 2), (1, 3, 3), (2, 3, 2), (3, 3, 2), (3, 2, 1)]


def _irreps(hidden_l: int, max_ell: int, channels: int) -> tuple[o3.Irreps, o3.Irreps, o3.Irreps]:
    node = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(hidden_l + 1)])
    edge = o3.Irreps.spherical_harmonics(max_ell)
    return node, edge, (edge * channels).sort()[0].simplify()


def _conv(backend: str, node: o3.Irreps, edge: o3.Irreps, target: o3.Irreps, **options):
    be = mgp.get_backend(backend)
    opts = be.resolve_options({**NODE_PATH, **options})
    return be.build_conv(node, edge, be.conv_irreps_out(node, edge, target, opts), None, opts)


def _inputs(node: o3.Irreps, edge: o3.Irreps, weight_numel: int, n_nodes: int = 6, n_edges: int = 13, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n_nodes, node.dim, generator=gen)
    vec = torch.randn(n_edges, 3, generator=gen)
    x2 = o3.SphericalHarmonics(edge, normalize=True, normalization="component")(vec)
    w = torch.randn(n_edges, weight_numel, generator=gen)
    edge_index = torch.randint(0, n_nodes, (2, n_edges), generator=gen)
    return x1, x2, w, edge_index, vec


def _paths(conv) -> list[tuple[int, int, int]]:
    return mace_conv_paths("grid", conv.irreps_in1, conv.irreps_in2, conv.irreps_out)


def _tied_path_weights(conv, w: torch.Tensor) -> torch.Tensor:
    """e3nn ``uvu`` weights ``[E, n_paths * C]`` with each path's weights its pair's."""
    paths = _paths(conv)
    pairs, _, _ = node_path_slots(paths, conv.degrees_in, conv.degrees_edge)
    per_pair = w.reshape(w.shape[0], conv.channels, len(pairs))
    return per_pair[:, :, [pairs.index((l1, l2)) for l1, l2, _ in paths]].transpose(1, 2).reshape(w.shape[0], -1)


@pytest.mark.parametrize("kernel", ["torch", "reference"])
@pytest.mark.parametrize("backend", ["grid", "gaunt"])
@pytest.mark.parametrize("hidden_l,max_ell,channels", CASES)
def test_node_path_equals_e3nn_conv_with_tied_weights(hidden_l, max_ell, channels, backend, kernel, float64, one_thread) -> None:
    node, edge, target = _irreps(hidden_l, max_ell, channels)
    mid, instructions = tp_out_irreps_with_instructions(node, edge, target)
    tp = o3.TensorProduct(node, edge, mid, instructions, shared_weights=False, internal_weights=False)
    conv = _conv(backend, node, edge, target, kernel=kernel)
    pairs = {(l1, l2) for l1, l2, _ in _paths(conv)}
    assert conv.irreps_out == mid and conv.weight_numel == channels * len(pairs) and not list(conv.parameters())
    x1, x2, w, edge_index, _ = _inputs(node, edge, conv.weight_numel)
    wp = _tied_path_weights(conv, w)
    per_edge = tp(x1[edge_index[0]], x2, wp)
    ref = torch.zeros(x1.shape[0], mid.dim, dtype=x1.dtype).index_add(0, edge_index[1], per_edge)
    torch.testing.assert_close(conv(x1, x2, w, edge_index), ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(conv(x1[edge_index[0]], x2, w), per_edge, rtol=0, atol=1e-10)
    assert ref.abs().max() > 1e-2


@pytest.mark.parametrize("backend", ["grid", "gaunt"])
def test_node_path_blocks_sum_to_the_l1l2_conv(backend, float64, one_thread) -> None:
    """Every pair of hidden L = 1 x edge L = 3 reaches a target degree, so the weight layouts
    agree; rescaling each path block by ``a_l3 / s_p`` and summing per ``l3`` gives ``l1l2``."""
    node, edge, target = _irreps(1, 3, 3)
    conv = _conv(backend, node, edge, target)
    be = mgp.get_backend(backend)
    opts = be.resolve_options({"conv_weights": "l1l2"})
    l1l2 = be.build_conv(node, edge, be.conv_irreps_out(node, edge, target, opts), None, opts)
    assert conv.weight_numel == l1l2.weight_numel
    x1, x2, w, edge_index, _ = _inputs(node, edge, conv.weight_numel)
    blocks = conv(x1, x2, w, edge_index)
    paths = _paths(conv)
    a = dict(zip(l1l2.degrees_out, conv_normalisation(l1l2.degrees_in, l1l2.degrees_edge, l1l2.degrees_out)))
    s = path_scales(paths)
    total = {l3: 0 for l3 in l1l2.degrees_out}
    off = 0
    for p, (_, _, l3) in enumerate(paths):
        width = conv.channels * (2 * l3 + 1)
        total[l3] = total[l3] + blocks[:, off : off + width] * float(a[l3] / s[p])
        off += width
    expected = torch.cat([total[ir.l] for _, ir in l1l2.irreps_out], dim=1)
    torch.testing.assert_close(expected, l1l2(x1, x2, w, edge_index), rtol=0, atol=1e-10)


def test_receiver_slots_pack_pairs_without_overlapping_degrees() -> None:
    for hidden_l, max_ell, _ in CASES:
        node, edge, target = _irreps(hidden_l, max_ell, 1)
        mid, instructions = tp_out_irreps_with_instructions(node, edge, target)
        paths = [(node[i].ir.l, edge[j].ir.l, mid[k].ir.l) for i, j, k, _, _ in instructions]
        pairs, slots, where = node_path_slots(paths, tuple(range(hidden_l + 1)), tuple(range(max_ell + 1)))
        assert sorted(q for slot in slots for q in slot) == sorted(pairs)
        for j, slot in enumerate(slots):
            assert len({l1 for l1, _ in slot}) == 1
            outs = [l3 for p, (_, _, l3) in enumerate(paths) if where[p] == j]
            assert len(outs) == len(set(outs)), (slot, outs)  # one path per (slot, l3)
    node, edge, target = _irreps(1, 3, 1)
    assert _conv("grid", node, edge, target).n_slots == 3  # against 10 paths and 8 pairs


@pytest.mark.parametrize("fused", [True, False])
def test_node_path_derivatives(fused, float64, one_thread) -> None:
    node, edge, target = _irreps(1, 2, 2)
    conv = _conv("grid", node, edge, target, kernel="torch", fused=fused)
    x1, x2, w, edge_index, _ = _inputs(node, edge, conv.weight_numel, n_nodes=4, n_edges=7)
    if fused:
        fn = lambda a, b, c: conv(a, b, c, edge_index)  # noqa: E731
    else:
        fn = lambda a, b, c: conv(a[edge_index[0]], b, c)  # noqa: E731
    args = tuple(t.clone().requires_grad_(True) for t in (x1, x2, w))
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@pytest.mark.parametrize("backend", ["grid", "gaunt"])
def test_node_path_is_o3_equivariant(backend, float64, one_thread) -> None:
    node, edge, target = _irreps(2, 3, 2)
    conv = _conv(backend, node, edge, target)
    x1, _, w, edge_index, vec = _inputs(node, edge, conv.weight_numel)
    sh = o3.SphericalHarmonics(edge, normalize=True, normalization="component")
    out = conv(x1, sh(vec), w, edge_index)
    for seed, reflect in ((1, False), (2, True)):
        r = random_orthogonal(seed, reflect)
        rotated = conv(x1 @ node.D_from_matrix(r).T, sh(vec @ r.T), w, edge_index)
        torch.testing.assert_close(rotated, out @ conv.irreps_out.D_from_matrix(r).T, rtol=0, atol=1e-10)


@pytest.mark.parametrize("primitives", [False, True])
def test_node_path_torchscript_and_pickle(primitives, float64, one_thread) -> None:
    node, edge, target = _irreps(2, 3, 2)
    conv = _conv("grid", node, edge, target)
    x1, x2, w, edge_index, _ = _inputs(node, edge, conv.weight_numel)
    eager = conv(x1, x2, w, edge_index)
    scripted = copy.deepcopy(conv)
    assert use_primitives_in_torchscript(scripted, primitives) == 1
    buf = io.BytesIO()
    torch.jit.save(jit.script(scripted), buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(x1, x2, w, edge_index), eager, rtol=0, atol=1e-12)
    torch.testing.assert_close(pickle.loads(pickle.dumps(conv))(x1, x2, w, edge_index), eager, rtol=0, atol=0)
    assert conv.conv_weights() == "node_path" and "receiver slots" in repr(conv)
    empty = conv(x1, x2[:0], w[:0], edge_index[:, :0])
    assert empty.shape == eager.shape and not empty.any()


def test_a_conv_pickled_before_node_path_still_loads(float64) -> None:
    node, edge, target = _irreps(1, 2, 2)
    be = mgp.get_backend("grid")
    opts = be.resolve_options({"conv_weights": "path"})
    conv = be.build_conv(node, edge, be.conv_irreps_out(node, edge, target, opts), None, opts)
    x1, x2, w, edge_index, _ = _inputs(node, edge, conv.weight_numel)
    state = conv.__getstate__()
    for key in ("node_path", "keep_degrees", "n_pairs", "n_slots"):
        state.pop(key)
    for key in ("slot_l1", "slot_weights"):
        state["_buffers"].pop(key)
    state["_non_persistent_buffers_set"] -= {"slot_l1", "slot_weights"}
    old = type(conv).__new__(type(conv))
    old.__setstate__(state)
    torch.testing.assert_close(old(x1, x2, w, edge_index), conv(x1, x2, w, edge_index), rtol=0, atol=0)
    assert old.conv_weights() == "path" and old.keep_degrees


def test_node_path_parameter_count() -> None:
    """The radial MLP gives ``C`` per degree pair (as ``l1l2`` where every pair is used); the
    linear after the conv takes ``path``'s per-path inputs."""
    cfg = small_mace_config()
    l1l2 = count_parameters("grid", {"conv_weights": "l1l2"}, **cfg)
    path = count_parameters("grid", {"conv_weights": "path"}, **cfg)
    node_path = count_parameters("grid", NODE_PATH, **cfg)
    assert l1l2["conv"] < node_path["conv"] < path["conv"]
    assert node_path["product"] == l1l2["product"] and node_path["other"] == l1l2["other"]


def test_model_with_both_new_options_round_trips_through_a_safe_file(tmp_path) -> None:
    """Safe file (tensors and a JSON header only) and ``switch_backend`` of a model with
    ``node_path`` and ``product_basis=cp``; empty graphs and zero nodes through the kit."""
    from mace_gaunt_plugin.testing import atoms_to_batch, check_backend, default_dtype, model_energy_forces, synthetic_molecule

    options = {"conv_weights": "node_path", "product_basis": "cp", "product_rank": 2}
    cfg = small_mace_config()
    with default_dtype(torch.float64):
        torch.manual_seed(0)
        model = mgp.build_model("grid", backend_options=options, **cfg).eval()
        molecules = [synthetic_molecule(8, cfg["atomic_numbers"], seed=s) for s in (0, 1)]
        batch = atoms_to_batch(molecules, cfg["atomic_numbers"], cfg["r_max"])
    path = tmp_path / "model.safetensors"
    mgp.save_model(model, path)
    loaded = mgp.load_model(path)
    assert mgp.backend_options_of(loaded) == mgp.backend_options_of(model)
    assert mgp.backend_options_of(loaded)["product_rank"] == 2
    e0, f0 = model_energy_forces(model, batch)
    e1, f1 = model_energy_forces(loaded, batch)
    torch.testing.assert_close(e1, e0, rtol=0, atol=1e-12)
    torch.testing.assert_close(f1, f0, rtol=0, atol=1e-12)
    switched = mgp.switch_backend(model, "gaunt")
    e2, f2 = model_energy_forces(switched, batch)
    torch.testing.assert_close(e2, e0, rtol=0, atol=1e-9)
    torch.testing.assert_close(f2, f0, rtol=0, atol=1e-9)
    assert check_backend("grid", options, checks=("empty", "zero_nodes")) == {"empty": "passed", "zero_nodes": "passed"}
