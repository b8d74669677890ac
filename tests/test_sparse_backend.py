"""The ``sparse`` backend: e3nn equality at sparsity 0, the three-phase schedule driven by
the training hooks, freezing and compaction, checkpoints (training form and compact),
O(3) equivariance and forces for random kept-path subsets, TorchScript, float32, grad-grad.

Models are small (4x0e + 4x1o, max_ell 2, correlation 2) and built once per module;
tests work on deep copies.
"""

from __future__ import annotations

import copy
import io
import logging
from typing import Any

import pytest
import torch
from e3nn import o3
from e3nn.util import jit

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends import sparse_backend as sb
from mace_gaunt_plugin.backends._sparse_cg import CompactCGConv, SparseCGConv, n_kept, subset_keys
from mace_gaunt_plugin.errors import BackendError, BackendOptionError, UnsupportedIrrepsError
from mace_gaunt_plugin.testing import atoms_to_batch, default_dtype, model_energy_forces, random_orthogonal, small_mace_config

CFG = dict(hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=2)
OPTS = {"sparsity": 0.5, "random_epochs": 1, "gated_epochs": 1, "seed": 3}
EXACT = 1e-12


def _build(backend: str, options: dict | None = None, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    torch.manual_seed(seed)
    with default_dtype(torch.float64):
        return mgp.build_model(backend, backend_options=options, **small_mace_config(**{**CFG, **overrides}))


_CACHE: dict[str, torch.nn.Module] = {}


def _model(key: str) -> torch.nn.Module:
    """A fresh deep copy of a model built once per module."""
    if key not in _CACHE:
        _CACHE[key] = {
            "e3nn": lambda: _build("e3nn"),
            "s0": lambda: _build("sparse", {**OPTS, "sparsity": 0.0}),
            "s": lambda: _build("sparse", OPTS),
        }[key]()
    return copy.deepcopy(_CACHE[key])


@pytest.fixture(scope="module")
def batch(data_3bpa) -> dict[str, torch.Tensor]:
    import ase.io

    atoms = ase.io.read(data_3bpa / "train_mixedT.xyz", "0:3")
    cfg = small_mace_config(**CFG)
    with default_dtype(torch.float64):
        return atoms_to_batch(atoms, cfg["atomic_numbers"], cfg["r_max"])


def evaluate(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies and forces in eval mode (never changes a path set)."""
    was = model.training
    model.eval()
    try:
        e, f = model_energy_forces(model, batch)
    finally:
        model.train(was)
    return e.detach(), f.detach()


def train_steps(model: torch.nn.Module, batch: dict, n: int, opt: torch.optim.Optimizer | None = None) -> None:
    """``n`` MACE-style training steps (train mode, energy + force loss, double backward)."""
    model.train()
    for _ in range(n):
        e, f = model_energy_forces(model, batch, training=True)
        loss = (e**2).mean() + (f**2).mean()
        if opt is None:
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def convs(model: torch.nn.Module) -> list:
    return [block.conv_tp for block in model.interactions]


def close(a: torch.Tensor, b: torch.Tensor, atol: float = EXACT) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=atol)


# --------------------------------------------------------------------------- e3nn equality


def test_sparsity_zero_equals_e3nn_in_every_phase(batch) -> None:
    ref, net = _model("e3nn"), _model("s0")
    # Same RNG consumption at construction: every parameter MACE owns is identical.
    ours = dict(net.named_parameters())
    for name, p in ref.named_parameters():
        assert torch.equal(ours[name], p), name
    assert set(ours) - set(dict(ref.named_parameters())) == {f"interactions.{i}.conv_tp.gates" for i in range(2)}
    e0, f0 = evaluate(ref, batch)
    for epoch in range(3):  # phases 1, 2, 3 with all paths kept (gates stay 1: no optimizer)
        sb.SPARSE_BACKEND.on_epoch_start(net, epoch, 1)
        train_steps(net, batch, 2)
        e1, f1 = evaluate(net, batch)
        close(e1, e0)
        close(f1, f0)
    assert [c.phase_now for c in convs(net)] == [3, 3]
    e2, f2 = evaluate(sb.compact(net), batch)
    close(e2, e0)
    close(f2, f0)


def test_options_are_checked() -> None:
    backend = mgp.get_backend("sparse")
    assert backend.resolve_options({"sparsity": "0.3", "random_epochs": "2"})["sparsity"] == 0.3
    for bad in ({"sparsity": 1.0}, {"sparsity": -0.1}, {"random_epochs": -1}, {"gated_epochs": 1.5}, {"density": 0.5}):
        with pytest.raises(BackendOptionError):
            backend.resolve_options(bad)
    assert [n_kept(10, s) for s in (0.0, 0.3, 0.5, 0.7)] == [10, 7, 5, 3]
    irreps = o3.Irreps("2x0e + 2x1o")
    with pytest.raises(UnsupportedIrrepsError, match="no per-edge weights"):
        SparseCGConv(irreps, o3.Irreps("0e"), irreps, [(0, 0, 0, "uvu", False), (1, 0, 1, "uvu", True)], backend.resolve_options({}))
    assert [sb.phase_of_epoch(e, 2, 1) for e in range(5)] == [1, 1, 2, 3, 3]


# --------------------------------------------------------------------------- the schedule


def test_random_subsets_are_deterministic_and_cover_all_paths() -> None:
    n, k = 7, 4
    masks = []
    for step in range(1, 60):
        keys = subset_keys(3, 1, torch.tensor(step), n)
        order = torch.argsort(keys, stable=True)[:k]
        masks.append(tuple(sorted(order.tolist())))
        assert torch.equal(keys, subset_keys(3, 1, torch.tensor(step), n))
    assert len(set(masks)) > 10
    assert set().union(*masks) == set(range(n))
    other = [tuple(sorted(torch.argsort(subset_keys(4, 1, torch.tensor(s), n), stable=True)[:k].tolist())) for s in range(1, 60)]
    assert other != masks


def test_phases_follow_the_epoch_hook(batch, caplog) -> None:
    net = _model("s")
    hook = sb.SPARSE_BACKEND
    layers = convs(net)
    assert all(isinstance(c, SparseCGConv) and c.phase_now == 0 and bool(c.mask.all()) for c in layers)
    wide = layers[1]  # 7 paths, keeps 4
    assert (wide.n_paths, wide.n_keep) == (7, 4)

    # Phase 1: a new random subset of n_keep paths every training step, never in evaluation.
    with caplog.at_level(logging.INFO, logger=sb.__name__):
        hook.on_epoch_start(net, 0, 5)
    assert "phase 1" in caplog.text
    seen = set()
    for step in range(1, 7):
        train_steps(net, batch, 1)
        assert int(wide.step) == step and int(wide.mask.sum()) == wide.n_keep
        seen.add(tuple(wide.mask.tolist()))
        before = wide.mask.clone()
        evaluate(net, batch)
        net.requires_grad_(False)  # MACE's evaluate(): train mode, parameters frozen
        model_energy_forces(net, batch)
        net.requires_grad_(True)
        assert torch.equal(wide.mask, before) and int(wide.step) == step
    assert len(seen) > 1
    twin = _model("s")
    hook.on_epoch_start(twin, 0, 5)
    train_steps(twin, batch, 6)
    assert torch.equal(twin.interactions[1].conv_tp.mask, wide.mask), "same seed, same steps: same subsets"

    # Phase 2: the top n_keep paths by |gate|, re-chosen every training step.
    with torch.no_grad():
        wide.gates.copy_(torch.tensor([0.1, -3.0, 0.2, 2.0, 0.3, -1.0, 0.05]))
    hook.on_epoch_start(net, 1, 5)
    assert wide.mask.tolist() == [False, True, False, True, True, True, False]
    with torch.no_grad():
        wide.gates[0] = 5.0
    evaluate(net, batch)
    assert wide.mask.tolist() == [False, True, False, True, True, True, False], "evaluation changed the path set"
    with torch.no_grad():
        wide.gates[0] = 5.0  # (the optimizer-free step below keeps it)
    train_steps(net, batch, 1)
    assert wide.mask.tolist() == [True, True, False, True, False, True, False]

    # Phase 3: frozen path set and gate values; gates get zero gradient.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=sb.__name__):
        hook.on_epoch_start(net, 2, 5)
    assert "phase 3" in caplog.text and "layer 1" in caplog.text
    kept = sb.kept_paths(net)
    e0, _ = evaluate(net, batch)
    with torch.no_grad():
        wide.gates.copy_(torch.tensor([0.0, 0.0, 9.0, 0.0, 9.0, 0.0, 9.0]))
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    train_steps(net, batch, 1, opt)
    assert sb.kept_paths(net) == kept and wide.mask.tolist() == [True, True, False, True, False, True, False]
    e_model = evaluate(net, batch)[0]
    assert not torch.equal(e_model, e0)  # the MLP and the rest trained ...
    net.zero_grad(set_to_none=True)
    e, f = model_energy_forces(net, batch, training=True)
    ((e**2).mean() + (f**2).mean()).backward()
    assert wide.gates.grad is not None and torch.count_nonzero(wide.gates.grad) == 0  # ... the gates did not
    hook.on_epoch_start(net, 7, 5)
    assert sb.kept_paths(net) == kept  # later epochs keep the frozen set


def test_kept_paths_lists_l_triples() -> None:
    net = _model("s")
    full = sb.kept_paths(net)
    assert full[0] == [(0, 0, 0), (0, 1, 1), (0, 2, 2)]
    assert sorted(full[1]) == sorted([(0, 0, 0), (1, 1, 0), (0, 1, 1), (1, 0, 1), (1, 2, 1), (0, 2, 2), (1, 1, 2)])
    sb.freeze(net, [[0, 2], [1, 4, 6]])
    assert sb.kept_paths(net) == [[(0, 0, 0), (0, 2, 2)], [full[1][1], full[1][4], full[1][6]]]
    assert sb.kept_paths(sb.compact(net)) == sb.kept_paths(net)
    with pytest.raises(BackendError, match="masks for 2"):
        sb.freeze(net, [[0]])
    with pytest.raises(BackendError, match="at least one"):
        sb.freeze(net, [[0], []])


# --------------------------------------------------------------------------- compaction


def _random_frozen(seed: int, interaction: str | None = None) -> torch.nn.Module:
    net = _model("s") if interaction is None else _build("sparse", OPTS, interaction=interaction)
    gen = torch.Generator().manual_seed(seed)
    masks = []
    for conv in convs(net):
        with torch.no_grad():
            conv.gates.copy_(torch.randn(conv.n_paths, generator=gen, dtype=torch.float64) + 1.0)
        keep = torch.randperm(conv.n_paths, generator=gen)[: max(1, conv.n_paths // 2)]
        masks.append(sorted(keep.tolist()))
    return sb.freeze(net, masks)


def test_compact_model_equals_masked_model(batch) -> None:
    net = _model("s")
    with torch.no_grad():
        for conv in convs(net):
            conv.gates.copy_(torch.linspace(-1.5, 2.0, conv.n_paths))
    sb.SPARSE_BACKEND.on_epoch_start(net, 1, 1)  # phase 2: masked dense form, top paths
    e2, f2 = evaluate(net, batch)
    sb.freeze(net)
    e3, f3 = evaluate(net, batch)
    small = sb.compact(net)
    ec, fc = evaluate(small, batch)
    for a, b in ((e3, e2), (f3, f2), (ec, e2), (fc, f2)):
        close(a, b)
    assert all(isinstance(c, CompactCGConv) for c in convs(small))
    for block, dense in zip(small.interactions, net.interactions):
        assert block.conv_tp_weights.hs[-1] == block.conv_tp.weight_numel == block.conv_tp_weights.layer2.weight.shape[1]
        assert block.conv_tp.weight_numel < dense.conv_tp.weight_numel
        # Only the kept paths' output slots reach the (rebuilt) linear after the conv.
        assert block.linear.irreps_in == block.conv_tp.irreps_out
        assert block.conv_tp.irreps_out.dim < dense.conv_tp.irreps_out.dim
        assert block.linear.irreps_out == dense.linear.irreps_out
    assert sb.parameter_count(small) < sb.parameter_count(net)
    assert mgp.backend_of(small) == "sparse" and mgp.backend_options_of(small) == mgp.backend_options_of(net)
    with pytest.raises(BackendError, match="not frozen"):
        sb.compact(_model("s"))


def test_compact_radial_mlp_of_nonlinear_interaction(batch) -> None:
    """MACE's RadialMLP (Linear + bias) in RealAgnosticResidualNonLinearInteractionBlock."""
    net = _random_frozen(5, interaction="RealAgnosticResidualNonLinearInteractionBlock")
    small = sb.compact(net)
    for a, b in zip(evaluate(small, batch), evaluate(net, batch)):
        close(a, b)
    last = small.interactions[1].conv_tp_weights.net[-1]
    assert last.out_features == last.bias.shape[0] == small.interactions[1].conv_tp.weight_numel
    assert small.interactions[1].linear_1.irreps_in == small.interactions[1].conv_tp.irreps_out


@pytest.mark.parametrize("form", ["frozen", "compact"])
def test_random_subset_is_o3_equivariant_with_exact_forces(form, data_3bpa) -> None:
    import ase.io

    net = _random_frozen(11)
    if form == "compact":
        net = sb.compact(net)
    mol = ase.io.read(data_3bpa / "train_mixedT.xyz", "7")
    variants = [mol.copy()]
    rots = [random_orthogonal(1, False), random_orthogonal(2, True)]  # a rotation and a reflection
    for r in rots:
        a = mol.copy()
        a.positions = mol.positions @ r.numpy().T
        variants.append(a)
    h, picks = 1e-4, [(0, 0), (9, 1), (20, 2)]
    for atom, axis in picks:
        for sign in (1, -1):
            a = mol.copy()
            a.positions[atom, axis] += sign * h
            variants.append(a)
    cfg = small_mace_config(**CFG)
    with default_dtype(torch.float64):
        fd_batch = atoms_to_batch(variants, cfg["atomic_numbers"], cfg["r_max"])
    e, f = evaluate(net, fd_batch)
    f = f.reshape(len(variants), len(mol), 3)
    assert f[0].abs().max() > 1e-6
    for k, r in enumerate(rots, start=1):
        close(e[k], e[0], 1e-10)
        close(f[k], f[0] @ r.T, 1e-10)
    for j, (atom, axis) in enumerate(picks):
        fd = -(e[3 + 2 * j] - e[4 + 2 * j]) / (2 * h)
        torch.testing.assert_close(f[0, atom, axis], fd, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- checkpoints


def test_restart_from_state_dict_across_a_phase_boundary(batch) -> None:
    """Epochs 0-3 in one go == epochs 0-1, checkpoint, fresh model, epochs 2-3."""

    def epochs(net, opt, start, stop):
        for epoch in range(start, stop):
            sb.SPARSE_BACKEND.on_epoch_start(net, epoch, 2)
            train_steps(net, batch, 2, opt)

    whole = _model("s")
    opt = torch.optim.Adam(whole.parameters(), lr=1e-2)
    epochs(whole, opt, 0, 4)

    first = _model("s")
    opt = torch.optim.Adam(first.parameters(), lr=1e-2)
    epochs(first, opt, 0, 2)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)

    resumed = _model("s")
    resumed.load_state_dict(state["model"])  # strict: a phase-2 checkpoint into a phase-0 model
    assert [c.phase_now for c in convs(resumed)] == [2, 2]
    opt = torch.optim.Adam(resumed.parameters(), lr=1e-2)
    opt.load_state_dict(state["optimizer"])
    epochs(resumed, opt, 2, 4)
    assert sb.kept_paths(resumed) == sb.kept_paths(whole)
    for a, b in zip(evaluate(resumed, batch), evaluate(whole, batch)):
        close(a, b)

    # A phase-3 checkpoint (different tp_kept) into a fresh model, and into a phase-2 one.
    for target in (_model("s"), first):
        target.load_state_dict(whole.state_dict())
        for a, b in zip(evaluate(target, batch), evaluate(whole, batch)):
            close(a, b)


def test_compact_state_dict_loads_into_a_fresh_model(batch) -> None:
    small = sb.compact(_random_frozen(2))
    with pytest.raises(RuntimeError, match="sparse_backend.load_state_dict"):
        _model("s").load_state_dict(small.state_dict())
    fresh = _model("s")
    sb.load_state_dict(fresh, small.state_dict())
    assert sb.kept_paths(fresh) == sb.kept_paths(small)
    for a, b in zip(evaluate(fresh, batch), evaluate(small, batch)):
        close(a, b)


def test_before_save_compacts_only_frozen_models(caplog) -> None:
    net = _model("s")
    sb.SPARSE_BACKEND.on_epoch_start(net, 1, 1)
    with caplog.at_level(logging.WARNING, logger=sb.__name__):
        assert sb.SPARSE_BACKEND.before_save(net) is net
    assert "not frozen" in caplog.text
    sb.SPARSE_BACKEND.on_epoch_start(net, 2, 1)
    saved = sb.SPARSE_BACKEND.before_save(net)
    assert saved is not net and all(isinstance(c, CompactCGConv) for c in convs(saved))
    assert all(isinstance(c, SparseCGConv) for c in convs(net)), "the training model itself is untouched"


# --------------------------------------------------------------------------- export, dtypes, autograd


@pytest.mark.parametrize("phase", [1, 2, 3, "compact"])
def test_torchscript_matches_eager(phase, batch) -> None:
    net = _model("s")
    for epoch in range({1: 1, 2: 2, 3: 3, "compact": 3}[phase]):
        sb.SPARSE_BACKEND.on_epoch_start(net, epoch, 1)
        train_steps(net, batch, 1)
    if phase == "compact":
        net = sb.compact(net)
    e0, f0 = evaluate(net, batch)
    scripted = jit.compile(copy.deepcopy(net))
    if phase == "compact":
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        buffer.seek(0)
        scripted = torch.jit.load(buffer)
        assert sb.kept_paths(scripted) == sb.kept_paths(net)
    e1, f1 = evaluate(scripted, batch)
    close(e1, e0, 1e-10)
    close(f1, f0, 1e-10)
    assert mgp.backend_of(scripted) == "sparse"


def test_float32_training_and_compaction(batch) -> None:
    net = _model("s").float()
    assert net.interactions[0].conv_tp.gates.dtype == torch.float32
    b32 = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in batch.items()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for epoch in range(3):
        sb.SPARSE_BACKEND.on_epoch_start(net, epoch, 1)
        train_steps(net, b32, 2, opt)
    small = sb.compact(net)
    assert small.interactions[1].conv_tp.scale.dtype == torch.float32
    for a, b in zip(evaluate(small, b32), evaluate(net, b32)):
        assert a.dtype == torch.float32
        close(a, b, 1e-4)


def test_twice_differentiable() -> None:
    irreps1, irreps2 = o3.Irreps("2x0e + 2x1o"), o3.Irreps("1x0e + 1x1o + 1x2e")
    from mace.modules.irreps_tools import tp_out_irreps_with_instructions

    mid, instr = tp_out_irreps_with_instructions(irreps1, irreps2, o3.Irreps("2x0e + 2x1o + 2x2e"))
    with default_dtype(torch.float64):
        conv = SparseCGConv(irreps1, irreps2, mid, instr, {**OPTS})
    with torch.no_grad():
        conv.gates.copy_(torch.linspace(0.5, 1.5, conv.n_paths, dtype=torch.float64))
    conv.set_phase(1)
    conv.step.fill_(4)
    with torch.no_grad():
        conv.mask.copy_(conv.random_mask())
    conv.eval()
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(3, d, dtype=torch.float64, generator=gen, requires_grad=True) for d in (irreps1.dim, irreps2.dim, conv.weight_numel)]
    assert torch.autograd.gradcheck(conv, args)
    assert torch.autograd.gradgradcheck(conv, args)
    conv.set_phase(3)
    small = CompactCGConv(conv)
    args[2] = torch.randn(3, small.weight_numel, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradgradcheck(small, args)


def test_pickle_roundtrip_of_compact_model(batch) -> None:
    small = sb.compact(_random_frozen(4))
    buffer = io.BytesIO()
    torch.save(small, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    for a, b in zip(evaluate(again, batch), evaluate(small, batch)):
        close(a, b, 0.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_schedule_and_compaction(batch) -> None:
    net = _model("s")
    gpu = copy.deepcopy(net).to("cuda")
    batch_gpu = {k: v.to("cuda") if torch.is_tensor(v) else v for k, v in batch.items()}
    for epoch in range(3):
        for model, data in ((net, batch), (gpu, batch_gpu)):
            sb.SPARSE_BACKEND.on_epoch_start(model, epoch, 1)
            train_steps(model, data, 2)
        assert sb.kept_paths(gpu) == sb.kept_paths(net)
    small = sb.compact(gpu)
    assert small.interactions[1].conv_tp.scale.device.type == "cuda"
    for a, b in zip(evaluate(small, batch_gpu), evaluate(net, batch)):
        close(a.cpu(), b, 1e-9)
    scripted = jit.compile(copy.deepcopy(small))
    for a, b in zip(evaluate(scripted, batch_gpu), evaluate(net, batch)):
        close(a.cpu(), b, 1e-9)
