"""The quadrilinear conv primitives (``torch.ops.mace_gaunt.quad_*``) and the ``kernel``
option of the Gaunt-family conv.

The oracle is the ``reference`` kernel (plain PyTorch ops differentiated by autograd,
the implementation the conv had before the primitives) and, for the primitives alone,
one dense einsum of the form ``T``.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import textwrap

import pytest
import torch
from e3nn import o3
from e3nn.util import jit

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends._conv_primitives import limited_chunk_budget, primitive_conv, reference_conv
from mace_gaunt_plugin.backends._sphere_sites import SphereConv, use_primitives_in_torchscript
from mace_gaunt_plugin.errors import BackendOptionError
from mace_gaunt_plugin.testing import TOLERANCES, default_dtype

OPS = torch.ops.mace_gaunt

# Triton's interpreter (how the Triton kernels run on CPU tensors here) must be on before
# triton is first imported, so the interpreter tests run in a child pytest started with
# TRITON_INTERPRET=1 (test_triton_kernels_under_the_interpreter); in this process they skip.
INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"

# --------------------------------------------------------------------------- primitives alone

# (J of a, J of b, J of w): l2 has J = 1 everywhere; l1l2 has a (receivers) 1, b and w J.
J_CASES = [(1, 1, 1), (1, 3, 3), (3, 1, 3), (1, 3, 1), (3, 3, 3), (3, 3, 1)]


def _operands(ja: int, jb: int, jw: int, n: int = 4, e: int = 7, c: int = 2, k: int = 3, p: int = 5, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)  # noqa: E731
    a, b, w, s = rand(n, c, ja, p), rand(n, c, jb, p), rand(e, c, jw, k), rand(e, k, p)
    ia = torch.randint(0, n, (e,), generator=gen)
    ib = torch.randint(0, n, (e,), generator=gen)
    return a, b, w, s, ia, ib


def _dense_t(a, b, w, s, ia, ib) -> torch.Tensor:
    """T(a, b, w, s) with one einsum (broadcast degree axis)."""
    j = max(a.shape[2], b.shape[2], w.shape[2])
    ex = lambda t: t.expand(t.shape[0], t.shape[1], j, t.shape[3])  # noqa: E731
    return torch.einsum("ecjp,ecjp,ecjk,ekp->", ex(a[ia]), ex(b[ib]), ex(w), s)


@pytest.mark.parametrize("js", J_CASES)
def test_primitives_are_the_gradients_of_t(js, float64) -> None:
    """Each primitive is dT/d(operand) of the dense form, with degree axes summed or kept."""
    a, b, w, s, ia, ib = _operands(*js)
    leaves = [t.clone().requires_grad_() for t in (a, b, w, s)]
    da, db, dw, ds = torch.autograd.grad(_dense_t(*leaves, ia, ib), leaves)
    ja, jb, jw = js
    with limited_chunk_budget(1):  # one edge per chunk: chunk boundaries everywhere
        got = {
            "a": OPS.quad_nodes(b, w, s, ib, ia, ja),
            "b": OPS.quad_nodes(a, w, s, ia, ib, jb),
            "w": OPS.quad_weights(a, b, s, ia, ib, jw),
            "s": OPS.quad_points(a, b, w, ia, ib),
        }
    for name, ref in zip("abws", (da, db, dw, ds)):
        torch.testing.assert_close(got[name], ref, rtol=0, atol=1e-12, msg=name)
    assert ds.abs().max() > 1e-3


@pytest.mark.parametrize("js", J_CASES)
@pytest.mark.parametrize("budget", [1, 1 << 30])
def test_primitives_gradcheck_and_gradgradcheck(js, budget, float64) -> None:
    a, b, w, s, ia, ib = _operands(*js)
    ja, jb, jw = js
    leaves = tuple(t.clone().requires_grad_() for t in (a, b, w, s))
    cases = [
        (lambda b_, w_, s_: OPS.quad_nodes(b_, w_, s_, ib, ia, ja), (leaves[1], leaves[2], leaves[3])),
        (lambda a_, b_, s_: OPS.quad_weights(a_, b_, s_, ia, ib, jw), (leaves[0], leaves[1], leaves[3])),
        (lambda a_, b_, w_: OPS.quad_points(a_, b_, w_, ia, ib), (leaves[0], leaves[1], leaves[2])),
    ]
    with limited_chunk_budget(budget):
        for fn, args in cases:
            assert torch.autograd.gradcheck(fn, args)
            assert torch.autograd.gradgradcheck(fn, args)


def test_primitives_opcheck(float64) -> None:
    """Schema, fake (meta) kernels and autograd registration (torch.library.opcheck)."""
    a, b, w, s, ia, ib = _operands(1, 3, 3)
    a, b, w, s = (t.requires_grad_() for t in (a, b, w, s))
    torch.library.opcheck(OPS.quad_nodes, (b, w, s, ib, ia, 1))
    torch.library.opcheck(OPS.quad_weights, (a, b, s, ia, ib, 3))
    torch.library.opcheck(OPS.quad_points, (a, b, w, ia, ib))


def test_primitives_without_edges(float64) -> None:
    a, b, w, s, ia, ib = _operands(1, 2, 2, e=0)
    z = OPS.quad_nodes(b, w, s, ib, ia, 1)
    assert z.shape == (4, 2, 1, 5) and not z.any()
    assert OPS.quad_weights(a, b, s, ia, ib, 2).shape == (0, 2, 2, 3)
    assert OPS.quad_points(a, b, w, ia, ib).shape == (0, 3, 5)


def test_primitives_refuse_bad_degree_axes(float64) -> None:
    a, b, w, s, ia, ib = _operands(1, 3, 2)
    with pytest.raises(ValueError, match="degree-axis lengths"):
        OPS.quad_nodes(b, w, s, ib, ia, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_primitive_conv_float32_and_float64(dtype) -> None:
    f, _, w, s, src, dst = _operands(3, 3, 3, n=6, e=20, dtype=dtype)
    edge_index = torch.stack([src, dst])
    got = primitive_conv(f, w, s, edge_index)
    ref = reference_conv(f.double(), w.double(), s.double(), edge_index)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=TOLERANCES[dtype] * 10)


# --------------------------------------------------------------------------- the conv module

GRAPHS = ["no_edges", "isolated_nodes", "unsorted_repeated"]


def _edge_index(graph: str, n_nodes: int, gen: torch.Generator) -> torch.Tensor:
    if graph == "no_edges":
        return torch.zeros((2, 0), dtype=torch.long)
    if graph == "isolated_nodes":  # nodes 3.. have no edge at all
        pairs = [(0, 1), (1, 0), (1, 2), (2, 0), (0, 0)]
        return torch.tensor(pairs, dtype=torch.long).T.contiguous()
    idx = torch.randint(0, n_nodes, (2, 14), generator=gen)
    return torch.cat([idx, idx[:, :4]], dim=1)  # the first four edges twice, nothing sorted


def _build(backend: str, hidden_l: int, max_ell: int, mode: str, kernel: str, channels: int = 2) -> SphereConv:
    be = mgp.get_backend(backend)
    opts = be.resolve_options({"conv_weights": mode, "kernel": kernel})
    node = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(hidden_l + 1)])
    edge = o3.Irreps.spherical_harmonics(max_ell)
    target = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(max_ell + 1)])
    out = be.conv_irreps_out(node, edge, target, opts)
    return be.build_conv(node, edge, out, None, opts)


def _inputs(conv: SphereConv, graph: str, n_nodes: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    edge_index = _edge_index(graph, n_nodes, gen)
    e = edge_index.shape[1]
    x1 = torch.randn(n_nodes, conv.irreps_in1.dim, generator=gen)
    vec = torch.randn(e, 3, generator=gen)
    w = torch.randn(e, conv.weight_numel, generator=gen)
    return x1, vec, w, edge_index


def _edge_attrs(conv: SphereConv, vec: torch.Tensor) -> torch.Tensor:
    return o3.spherical_harmonics(conv.irreps_in2, vec, normalize=True, normalization="component")


def _pair(backend: str, hidden_l: int, max_ell: int, mode: str) -> tuple[SphereConv, SphereConv]:
    return _build(backend, hidden_l, max_ell, mode, "torch"), _build(backend, hidden_l, max_ell, mode, "reference")


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("max_ell", [1, 2, 3])
@pytest.mark.parametrize("hidden_l", [0, 1, 2, 3])
@pytest.mark.parametrize("mode", ["l2", "l1l2", "path", "node_path"])
def test_torch_kernel_equals_reference(mode, hidden_l, max_ell, graph, float64, one_thread) -> None:
    new, ref = _pair("grid", hidden_l, max_ell, mode)
    assert new.kernel_in_use() == "torch" and ref.kernel_in_use() == "reference"
    x1, vec, w, edge_index = _inputs(new, graph)
    x2 = _edge_attrs(new, vec)
    with limited_chunk_budget(2048):  # several chunks on these graphs
        got = new(x1, x2, w, edge_index)
    want = ref(x1, x2, w, edge_index)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    if graph != "no_edges":
        assert want.abs().max() > 1e-3
        # unfused (per-edge rows) as well
        torch.testing.assert_close(new(x1[edge_index[0]], x2, w), ref(x1[edge_index[0]], x2, w), rtol=0, atol=1e-12)
    if graph == "isolated_nodes":
        assert not got[3:].any()


@pytest.mark.parametrize("mode", ["l2", "l1l2", "path", "node_path"])
def test_torch_kernel_equals_reference_fourier_engine(mode, float64, one_thread) -> None:
    new, ref = _pair("gaunt", 2, 3, mode)
    x1, vec, w, edge_index = _inputs(new, "unsorted_repeated")
    x2 = _edge_attrs(new, vec)
    torch.testing.assert_close(new(x1, x2, w, edge_index), ref(x1, x2, w, edge_index), rtol=0, atol=1e-12)


def _forces_and_second(conv: torch.nn.Module, x1, vec, w, edge_index, irreps_edge=None):
    """Forces-like first derivatives and a force-training double backward through the conv."""
    x1, vec, w = (t.clone().requires_grad_() for t in (x1, vec, w))
    x2 = o3.spherical_harmonics(irreps_edge or conv.irreps_in2, vec, normalize=True, normalization="component")
    out = conv(x1, x2, w, edge_index)
    energy = (out**2).sum() + out.sum()
    d_vec, d_x1 = torch.autograd.grad(energy, (vec, x1), create_graph=True)
    loss = (d_vec**2).sum() + (d_x1**3).sum()
    second = torch.autograd.grad(loss, (x1, vec, w))
    return (d_vec, d_x1), second


@pytest.mark.parametrize("mode", ["l2", "l1l2", "path", "node_path"])
@pytest.mark.parametrize("graph", ["isolated_nodes", "unsorted_repeated"])
def test_forces_and_double_backward_equal_reference(mode, graph, float64, one_thread) -> None:
    new, ref = _pair("grid", 2, 3, mode)
    args = _inputs(new, graph)
    with limited_chunk_budget(2048):
        first_new, second_new = _forces_and_second(new, *args)
    first_ref, second_ref = _forces_and_second(ref, *args)
    for got, want in zip(first_new + second_new, first_ref + second_ref):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert want.abs().max() > 1e-6


def _saved_numels(conv: SphereConv, x1, vec, w, edge_index) -> list[int]:
    """Sizes of every tensor autograd saves in forward, first and second backward."""
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _forces_and_second(conv, x1, vec, w, edge_index)
    return sizes


@pytest.mark.parametrize("mode", ["l2", "l1l2", "path", "node_path"])
def test_torch_kernel_keeps_no_edge_by_channel_by_point_tensor(mode, float64, one_thread) -> None:
    """No [E, C, P] tensor is saved for the backward, at first or second order; the
    reference kernel does save them (so the check can fail)."""
    # channels > edge degrees: S [E, K, P] (an operand, saved) is smaller than [E, C, P]
    new, ref = _build("grid", 1, 3, mode, "torch", channels=8), _build("grid", 1, 3, mode, "reference", channels=8)
    n_nodes, n_edges, channels = 4, 200, new.channels
    gen = torch.Generator().manual_seed(1)
    x1 = torch.randn(n_nodes, new.irreps_in1.dim, generator=gen)
    vec = torch.randn(n_edges, 3, generator=gen)
    w = torch.randn(n_edges, new.weight_numel, generator=gen)
    edge_index = torch.randint(0, n_nodes, (2, n_edges), generator=gen)
    ecp = n_edges * channels * new.engine.num_points
    assert max(_saved_numels(new, x1, vec, w, edge_index)) < ecp
    assert max(_saved_numels(ref, x1, vec, w, edge_index)) >= ecp


# --------------------------------------------------------------------------- TorchScript, options, pickles


def _roundtrip(module: torch.nn.Module) -> torch.jit.ScriptModule:
    buf = io.BytesIO()
    torch.jit.save(jit.compile(module), buf)
    buf.seek(0)
    return torch.jit.load(buf)


@pytest.mark.parametrize("mode", ["l2", "l1l2", "path", "node_path"])
def test_torchscript_with_primitives_equals_eager(mode, float64) -> None:
    conv = _build("grid", 2, 3, mode, "torch")
    x1, vec, w, edge_index = _inputs(conv, "unsorted_repeated")
    x2 = _edge_attrs(conv, vec)
    eager = conv(x1, x2, w, edge_index)
    assert use_primitives_in_torchscript(conv) == 1
    scripted = _roundtrip(conv)
    assert "mace_gaunt::quad_nodes" in str(scripted.inlined_graph)
    torch.testing.assert_close(scripted(x1, x2, w, edge_index), eager, rtol=0, atol=1e-12)
    # derivatives through the scripted custom op
    first_s, second_s = _forces_and_second(scripted, *_inputs(conv, "unsorted_repeated"), irreps_edge=conv.irreps_in2)
    first_e, second_e = _forces_and_second(conv, *_inputs(conv, "unsorted_repeated"))
    for got, want in zip(first_s + second_s, first_e + second_e):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_default_torchscript_is_portable(float64) -> None:
    """By default the scripted conv holds plain aten ops only (loads without the plugin)."""
    conv = _build("grid", 1, 3, "l2", "torch")
    x1, vec, w, edge_index = _inputs(conv, "unsorted_repeated")
    x2 = _edge_attrs(conv, vec)
    scripted = _roundtrip(conv)
    assert "mace_gaunt::" not in str(scripted.inlined_graph)
    torch.testing.assert_close(scripted(x1, x2, w, edge_index), conv(x1, x2, w, edge_index), rtol=0, atol=1e-12)


LOAD_WITHOUT_PLUGIN = textwrap.dedent(
    """
    import sys, torch
    try:
        torch.jit.load(sys.argv[1])
        print("loaded", "mace_gaunt_plugin" in sys.modules)
    except RuntimeError as exc:
        print("error", "mace_gaunt::quad_nodes" in str(exc))
    """
)


def test_which_torchscript_files_load_without_the_plugin(tmp_path, python, float64) -> None:
    conv = _build("grid", 1, 2, "l2", "torch")
    portable = tmp_path / "portable.pt"
    torch.jit.save(jit.compile(conv), str(portable))
    use_primitives_in_torchscript(conv)
    with_ops = tmp_path / "with_ops.pt"
    torch.jit.save(jit.compile(conv), str(with_ops))
    out = {}
    for path in (portable, with_ops):
        run = subprocess.run([python, "-c", LOAD_WITHOUT_PLUGIN, str(path)], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        out[path.name] = run.stdout.split()
    assert out["portable.pt"] == ["loaded", "False"]
    assert out["with_ops.pt"] == ["error", "True"]


def test_kernel_option_is_validated_and_reported() -> None:
    grid = mgp.get_backend("grid")
    assert grid.resolve_options({})["kernel"] == "auto"
    with pytest.raises(BackendOptionError, match="kernel"):
        grid.resolve_options({"kernel": "cuda-magic"})
    with default_dtype(torch.float64):
        conv = _build("grid", 1, 2, "l2", "auto")
        ref = _build("grid", 1, 2, "l2", "reference")
    assert conv.kernel_in_use() == "torch"
    assert "kernel=auto (runs torch; TorchScript: reference)" in repr(conv)
    assert "kernel=reference (runs reference; TorchScript: reference)" in repr(ref)
    use_primitives_in_torchscript(conv)
    assert "TorchScript: torch" in repr(conv)
    opts = dict(grid.resolve_options({}), kernel="bogus")
    with pytest.raises(BackendOptionError, match="kernel"):
        SphereConv(conv.irreps_in1, conv.irreps_in2, conv.irreps_out, grid.engine_factory, "grid", opts)


def test_auto_takes_the_torch_kernel_on_cuda_until_triton_is_measured(float64) -> None:
    """Issue 24: the Triton kernels have not yet run on a GPU, so ``auto`` must not choose
    them there (``triton`` stays one option away), also for a model pickled when it did."""
    from mace_gaunt_plugin.backends import _sphere_sites

    assert _sphere_sites.AUTO_CUDA_KERNEL == "torch"
    conv = _build("grid", 1, 2, "l2", "auto")
    assert not conv.auto_triton  # the flag that sends CUDA tensors to Triton under auto
    old = SphereConv.__new__(SphereConv)
    old.__setstate__(dict(conv.__dict__, auto_triton=True))  # as pickled by a version whose auto took Triton
    assert not old.auto_triton and old.kernel == "auto"
    opt = mgp.get_backend("grid").options
    assert "torch everywhere until a GPU run" in next(o.help for o in opt if o.name == "kernel")


def test_model_built_with_kernel_option(float64) -> None:
    from mace_gaunt_plugin.testing import small_mace_config

    model = mgp.build_model("grid", backend_options={"kernel": "reference"}, **small_mace_config())
    kernels = {m.kernel for m in model.modules() if isinstance(m, SphereConv)}
    assert kernels == {"reference"}


def test_pickle_from_before_the_kernel_option_loads(float64) -> None:
    conv = _build("grid", 1, 2, "l2", "torch")
    x1, vec, w, edge_index = _inputs(conv, "unsorted_repeated")
    x2 = _edge_attrs(conv, vec)
    state = conv.__getstate__() if hasattr(conv, "__getstate__") else conv.__dict__
    old = {k: v for k, v in dict(state).items() if k not in ("kernel", "use_reference", "script_portable")}
    restored = SphereConv.__new__(SphereConv)
    restored.__setstate__(old)
    assert restored.kernel == "auto" and restored.script_portable
    torch.testing.assert_close(restored(x1, x2, w, edge_index), conv(x1, x2, w, edge_index), rtol=0, atol=0)
    again = pickle.loads(pickle.dumps(conv))
    torch.testing.assert_close(again(x1, x2, w, edge_index), conv(x1, x2, w, edge_index), rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_primitives_on_cuda_match_cpu(dtype) -> None:
    a, b, w, s, ia, ib = _operands(1, 3, 3, n=50, e=400, c=8, p=26, dtype=dtype)
    on = lambda *ts: [t.cuda() for t in ts]  # noqa: E731
    for op, args in (
        (OPS.quad_nodes, (b, w, s, ib, ia, 1)),
        (OPS.quad_weights, (a, b, s, ia, ib, 3)),
        (OPS.quad_points, (a, b, w, ia, ib)),
    ):
        tensors = [t for t in args if isinstance(t, torch.Tensor)]
        ints = [t for t in args if not isinstance(t, torch.Tensor)]
        got = op(*on(*tensors), *ints).cpu()
        torch.testing.assert_close(got, op(*args), rtol=0, atol=TOLERANCES[dtype] * 10)


# --------------------------------------------------------------------------- Triton kernels (interpreter on CPU)


@pytest.fixture
def triton_interpreter():
    if not INTERPRETER:
        pytest.skip("runs in the child pytest of test_triton_kernels_under_the_interpreter")
    triton = pytest.importorskip("triton", reason="Triton is not installed (the 'triton' extra)")
    assert triton.knobs.runtime.interpret


def test_triton_kernels_under_the_interpreter(python) -> None:
    """The tests that use ``triton_interpreter``, in a fresh pytest with TRITON_INTERPRET=1."""
    pytest.importorskip("triton", reason="Triton is not installed (the 'triton' extra)")
    if INTERPRETER:
        pytest.skip("this is the child")
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    run = subprocess.run(
        [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", __file__, "-k", "triton and not under_the_interpreter and not cuda"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    tail = run.stdout[-3000:]
    assert run.returncode == 0, tail + run.stderr[-2000:]
    assert " passed" in tail and "skipped" not in tail.splitlines()[-1], tail


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("js", J_CASES)
def test_triton_primitives_equal_torch(js, dtype, triton_interpreter) -> None:
    a, b, w, s, ia, ib = _operands(*js, n=5, e=11, c=3, k=4, p=7, dtype=dtype)
    ja, jb, jw = js
    tol = TOLERANCES[dtype]
    for j_out in sorted({1, max(js)}):
        torch.testing.assert_close(OPS.quad_nodes_triton(b, w, s, ib, ia, j_out), OPS.quad_nodes(b, w, s, ib, ia, j_out), rtol=0, atol=tol)
        torch.testing.assert_close(OPS.quad_weights_triton(a, b, s, ia, ib, j_out), OPS.quad_weights(a, b, s, ia, ib, j_out), rtol=0, atol=tol)
    torch.testing.assert_close(OPS.quad_points_triton(a, b, w, ia, ib), OPS.quad_points(a, b, w, ia, ib), rtol=0, atol=tol)
    empty = _operands(*js, e=0, dtype=dtype)
    assert not OPS.quad_nodes_triton(empty[1], empty[2], empty[3], empty[5], empty[4], ja).any()


def test_triton_primitives_gradgradcheck(triton_interpreter, float64) -> None:
    a, b, w, s, ia, ib = _operands(1, 2, 2, n=3, e=4, c=2, k=2, p=3)
    leaves = tuple(t.clone().requires_grad_() for t in (b, w, s))
    fn = lambda b_, w_, s_: OPS.quad_nodes_triton(b_, w_, s_, ib, ia, 1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves)
    assert torch.autograd.gradgradcheck(fn, leaves)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["l2", "l1l2", "path", "node_path"])
def test_triton_conv_equals_reference(mode, dtype, triton_interpreter) -> None:
    with default_dtype(dtype):
        new = _build("grid", 1, 2, mode, "triton")
        ref = _build("grid", 1, 2, mode, "reference")
    assert new.kernel_in_use() == "triton" and "kernel=triton (runs triton" in repr(new)
    x1, vec, w, edge_index = (t.to(dtype) if t.is_floating_point() else t for t in _inputs(new, "isolated_nodes"))
    x2 = _edge_attrs(new, vec)
    torch.testing.assert_close(new(x1, x2, w, edge_index), ref(x1, x2, w, edge_index), rtol=0, atol=TOLERANCES[dtype] * 10)
    if dtype == torch.float64:
        first_new, second_new = _forces_and_second(new, x1, vec, w, edge_index)
        first_ref, second_ref = _forces_and_second(ref, x1, vec, w, edge_index)
        for got, want in zip(first_new + second_new, first_ref + second_ref):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_triton_kernel_refused_on_cpu(monkeypatch, triton_interpreter) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendOptionError, match="kernel='triton' cannot run here"):
        _build("grid", 1, 2, "l2", "triton")
    conv = _build("grid", 1, 2, "l2", "auto")
    assert conv.kernel_in_use() == "torch"  # auto on CPU tensors: the torch primitives
    pytest.importorskip("triton", reason="Triton is not installed (the 'triton' extra)")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    forced = _build("grid", 1, 2, "l2", "triton")
    monkeypatch.delenv("TRITON_INTERPRET")
    x1, vec, w, edge_index = _inputs(forced, "isolated_nodes")
    with pytest.raises(RuntimeError, match="CUDA"):
        forced(x1, _edge_attrs(forced, vec), w, edge_index)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_on_cuda_matches_torch(dtype) -> None:
    pytest.importorskip("triton", reason="Triton is not installed (the 'triton' extra)")
    with default_dtype(dtype):
        for mode in ("l2", "l1l2", "path", "node_path"):
            new = _build("grid", 2, 3, mode, "triton", channels=16).cuda()
            ref = _build("grid", 2, 3, mode, "torch", channels=16).cuda()
            assert new.kernel_in_use() == "triton"
            assert _build("grid", 2, 3, mode, "auto", channels=16).cuda().kernel_in_use() == "torch"  # until measured
            x1, vec, w, edge_index = (t.to(dtype).cuda() if t.is_floating_point() else t.cuda() for t in _inputs(new, "unsorted_repeated", n_nodes=40))
            first_new, second_new = _forces_and_second(new, x1, vec, w, edge_index)
            first_ref, second_ref = _forces_and_second(ref, x1, vec, w, edge_index)
            for got, want in zip(first_new + second_new, first_ref + second_ref):
                torch.testing.assert_close(got, want, rtol=TOLERANCES[dtype] * 10, atol=TOLERANCES[dtype] * 10)
