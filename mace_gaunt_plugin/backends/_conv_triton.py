"""Triton kernels of the quadrilinear conv primitives (kernel ``triton``), CUDA, fp32/fp64.

Same operators as :mod:`._conv_primitives` (``torch.ops.mace_gaunt.quad_*_triton``, the same
signatures, fake kernels and self-referencing autograd formulas, registered through
:func:`._conv_primitives.define_primitives`), computed by one Triton program per edge and
block of channels: the per-edge products live in registers only, so nothing of size
``[E, C, P]`` is ever allocated (no edge chunks needed). ``quad_nodes`` sums onto nodes
with atomic adds (the summation order, hence the last bits, vary from run to run).

The operators are registered whether or not Triton is installed (so a TorchScript file
that names them still loads with the plugin); calling one without Triton, or on tensors
Triton cannot run (CPU tensors, unless ``TRITON_INTERPRET=1``, Triton's interpreter, which
the tests use), raises ``RuntimeError`` saying so. Nothing falls back to another kernel.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from ._conv_primitives import _degree_axis, define_primitives, edge_rows

__all__ = ["triton_available", "triton_unavailable_reason", "triton_conv", "Launch", "launch_config", "jit_kernels", "KERNEL_ARGS"]


def triton_unavailable_reason() -> Optional[str]:
    """Why the Triton kernels cannot run in this process, or ``None``."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install 'mace-gaunt-plugin[triton]')"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return None
    if not torch.cuda.is_available():
        return "Triton kernels need a CUDA GPU (none is available; TRITON_INTERPRET=1 runs them on CPU tensors, slowly)"
    return None


def triton_available() -> bool:
    return triton_unavailable_reason() is None


def _p2(n: int) -> int:
    return max(1, 1 << (max(1, n) - 1).bit_length())


def _kernels() -> dict[str, Any]:
    """The kernels by name; Triton's interpreter decides at decoration time, so they are
    built once per value of ``TRITON_INTERPRET``."""
    return _build_kernels(os.environ.get("TRITON_INTERPRET") == "1")


def jit_kernels() -> dict[str, Any]:
    """The kernels as ``triton.jit`` functions for a real GPU (never the interpreter's), by
    name: what ``triton.compile`` takes (``tests/test_triton_compile.py`` compiles them)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("jit_kernels: TRITON_INTERPRET=1 is set, so triton.jit gives interpreter functions; unset it")
    return _build_kernels(False)


#: each kernel's pointer arguments, by role: ``"f"`` a float tensor (the operands' dtype),
#: ``"i"`` an edge-index tensor; then the runtime ``C, P`` (``i32``), then the constexprs.
KERNEL_ARGS: dict[str, tuple[tuple[str, str], ...]] = {
    "nodes": (("x", "f"), ("w", "f"), ("s", "f"), ("gat", "i"), ("sca", "i"), ("out", "f")),
    "weights": (("a", "f"), ("b", "f"), ("s", "f"), ("ia", "i"), ("ib", "i"), ("out", "f")),
    "points": (("a", "f"), ("b", "f"), ("w", "f"), ("ia", "i"), ("ib", "i"), ("out", "f")),
}


@functools.lru_cache(maxsize=None)
def _build_kernels(interpret: bool) -> dict[str, Any]:
    import triton
    import triton.language as tl

    @triton.jit
    def nodes_kernel(x, w, s, gat, sca, out, C, P, JX: tl.constexpr, JW: tl.constexpr, J: tl.constexpr, JO: tl.constexpr,
                     K: tl.constexpr, BC: tl.constexpr, BP: tl.constexpr):  # fmt: skip
        e = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        p = tl.arange(0, BP)
        mc = c < C
        mp = p < P
        m = mc[:, None] & mp[None, :]
        g = tl.load(gat + e).to(tl.int64)
        d = tl.load(sca + e).to(tl.int64)
        acc = tl.zeros([BC, BP], dtype=out.dtype.element_ty)
        for j in tl.static_range(J):
            h = tl.zeros([BC, BP], dtype=out.dtype.element_ty)
            for k in tl.static_range(K):
                wk = tl.load(w + ((e * C + c) * JW + (j % JW)) * K + k, mask=mc, other=0.0)
                sk = tl.load(s + (e * K + k) * P + p, mask=mp, other=0.0)
                h += wk[:, None] * sk[None, :]
            xv = tl.load(x + ((g * C + c[:, None]) * JX + (j % JX)) * P + p[None, :], mask=m, other=0.0)
            if JO == 1:
                acc += xv * h
            else:
                tl.atomic_add(out + ((d * C + c[:, None]) * JO + j) * P + p[None, :], xv * h, mask=m)
        if JO == 1:
            tl.atomic_add(out + (d * C + c[:, None]) * P + p[None, :], acc, mask=m)

    @triton.jit
    def weights_kernel(a, b, s, ia, ib, out, C, P, JA: tl.constexpr, JB: tl.constexpr, J: tl.constexpr, JO: tl.constexpr,
                       K: tl.constexpr, BC: tl.constexpr, BP: tl.constexpr):  # fmt: skip
        e = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1) * BC + tl.arange(0, BC)
        p = tl.arange(0, BP)
        mc = c < C
        mp = p < P
        m = mc[:, None] & mp[None, :]
        na = tl.load(ia + e).to(tl.int64)
        nb = tl.load(ib + e).to(tl.int64)
        acc = tl.zeros([BC, BP], dtype=out.dtype.element_ty)
        for j in tl.static_range(J):
            av = tl.load(a + ((na * C + c[:, None]) * JA + (j % JA)) * P + p[None, :], mask=m, other=0.0)
            bv = tl.load(b + ((nb * C + c[:, None]) * JB + (j % JB)) * P + p[None, :], mask=m, other=0.0)
            if JO == 1:
                acc += av * bv
            else:
                for k in tl.static_range(K):
                    sk = tl.load(s + (e * K + k) * P + p, mask=mp, other=0.0)
                    tl.store(out + ((e * C + c) * JO + j) * K + k, tl.sum(av * bv * sk[None, :], axis=1), mask=mc)
        if JO == 1:
            for k in tl.static_range(K):
                sk = tl.load(s + (e * K + k) * P + p, mask=mp, other=0.0)
                tl.store(out + (e * C + c) * K + k, tl.sum(acc * sk[None, :], axis=1), mask=mc)

    @triton.jit
    def points_kernel(a, b, w, ia, ib, out, C, P, JA: tl.constexpr, JB: tl.constexpr, JW: tl.constexpr, J: tl.constexpr,
                      K: tl.constexpr, BK: tl.constexpr, BC: tl.constexpr, BP: tl.constexpr):  # fmt: skip
        e = tl.program_id(0).to(tl.int64)
        p = tl.arange(0, BP)
        kk = tl.arange(0, BK)
        mp = p < P
        mk = kk < K
        na = tl.load(ia + e).to(tl.int64)
        nb = tl.load(ib + e).to(tl.int64)
        acc = tl.zeros([BK, BP], dtype=out.dtype.element_ty)
        for c0 in range(0, C, BC):
            c = c0 + tl.arange(0, BC)
            mc = c < C
            m = mc[:, None] & mp[None, :]
            for j in tl.static_range(J):
                av = tl.load(a + ((na * C + c[:, None]) * JA + (j % JA)) * P + p[None, :], mask=m, other=0.0)
                bv = tl.load(b + ((nb * C + c[:, None]) * JB + (j % JB)) * P + p[None, :], mask=m, other=0.0)
                wv = tl.load(w + ((e * C + c[None, :]) * JW + (j % JW)) * K + kk[:, None], mask=mk[:, None] & mc[None, :], other=0.0)
                acc += tl.sum(wv[:, :, None] * (av * bv)[None, :, :], axis=1)
        tl.store(out + (e * K + kk[:, None]) * P + p[None, :], acc, mask=mk[:, None] & mp[None, :])

    return {"nodes": nodes_kernel, "weights": weights_kernel, "points": points_kernel}


def _require(*tensors: torch.Tensor) -> None:
    why = triton_unavailable_reason()
    if why is not None:
        raise RuntimeError(f"mace_gaunt triton kernels: {why}")
    if os.environ.get("TRITON_INTERPRET") != "1" and not all(t.is_cuda for t in tensors):
        raise RuntimeError("mace_gaunt triton kernels need CUDA tensors (use kernel='torch' on CPU)")


#: elements of one program's ``[BC, BP]`` (points: ``[BK, BC, BP]``) tile; with ``NUM_WARPS``
#: warps that is TILE / (32 * NUM_WARPS) = 8 elements of each live tile per thread, half
#: that with a degree axis (``J > 1``: ``l1l2``, ``path``), whose unrolled loop keeps more
#: tiles live. Chosen from compiles for sm_90 in fp64 (benchmarks/triton_compile.py):
#: 4096 elements spilled (254 registers, 80 B, 2 blocks per SM); 1024 needs at most 104
#: registers at J = 1, but up to 255 (8 B spilled) at J = 3, K = 4; the half tile: 128 at most.
TILE = 1024
NUM_WARPS = 4


def _tile(j: int) -> int:
    return TILE if j == 1 else TILE // 2


@dataclass(frozen=True)
class Launch:
    """What one kernel launch is compiled for: the kernel, its ``tl.constexpr`` values and
    warps (Triton compiles one specialisation per distinct value), and the channel blocks
    per edge (the launch grid is ``(E, channel_blocks)``)."""

    kernel: str
    constexprs: tuple[tuple[str, int], ...]
    num_warps: int
    channel_blocks: int = field(compare=False)  # not part of the compiled specialisation

    def kwargs(self) -> dict[str, int]:
        return dict(self.constexprs, num_warps=self.num_warps)


def launch_config(op: str, shapes: Sequence[Sequence[int]], j_out: int = 1) -> Launch:
    """The launch of ``op`` (``"quad_nodes"``, ``"quad_weights"``, ``"quad_points"``, with or
    without the ``_triton`` suffix) for operands of these shapes: ``shapes`` are the shapes
    of the op's first three tensor arguments (``x, w, s`` / ``a, b, s`` / ``a, b, w``), as the
    torch and Triton families take them. The one place the blocking is chosen: the launchers
    below and the compile test use it."""
    name = op.removeprefix("quad_").removesuffix("_triton")
    first, second, third = (tuple(int(v) for v in sh) for sh in shapes)
    _, c, j_first, p = first
    if name == "nodes":
        jw, k = second[2], second[3]
        jj = _degree_axis("quad_nodes_triton", j_first, jw, j_out)
        named = dict(JX=j_first, JW=jw, J=jj, JO=j_out, K=k)
    elif name == "weights":
        jb, k = second[2], third[1]
        jj = _degree_axis("quad_weights_triton", j_first, jb, j_out)
        named = dict(JA=j_first, JB=jb, J=jj, JO=j_out, K=k)
    elif name == "points":
        jb, jw, k = second[2], third[2], third[3]
        jj = _degree_axis("quad_points_triton", j_first, jb, jw)
        bk, bp = _p2(k), _p2(p)
        bc = max(1, min(_p2(c), max(1, _tile(jj) // (bk * bp))))
        return Launch("points", tuple(dict(JA=j_first, JB=jb, JW=jw, J=jj, K=k, BK=bk, BC=bc, BP=bp).items()), NUM_WARPS, 1)
    else:
        raise ValueError(f"launch_config: unknown op {op!r} (quad_nodes, quad_weights, quad_points)")
    bp = _p2(p)
    bc = max(1, min(_p2(c), max(1, _tile(jj) // bp)))
    return Launch(name, tuple(dict(named, BC=bc, BP=bp).items()), NUM_WARPS, -(-c // bc))


def _nodes(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor, gather: torch.Tensor, scatter: torch.Tensor, j_out: int) -> torch.Tensor:
    _require(x, w, s)
    n, c, _, p = x.shape
    e = w.shape[0]
    launch = launch_config("quad_nodes", (x.shape, w.shape, s.shape), j_out)
    out = torch.zeros((n, c, j_out, p), dtype=x.dtype, device=x.device)
    if e == 0:
        return out
    _kernels()["nodes"][(e, launch.channel_blocks)](x.contiguous(), w.contiguous(), s.contiguous(), gather.contiguous(),
                                                    scatter.contiguous(), out, c, p, **launch.kwargs())  # fmt: skip
    return out


def _weights(a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, index_a: torch.Tensor, index_b: torch.Tensor, j_out: int) -> torch.Tensor:
    _require(a, b, s)
    _, c, _, p = a.shape
    e, k, _ = s.shape
    launch = launch_config("quad_weights", (a.shape, b.shape, s.shape), j_out)
    out = torch.empty((e, c, j_out, k), dtype=a.dtype, device=a.device)
    if e == 0:
        return out
    _kernels()["weights"][(e, launch.channel_blocks)](a.contiguous(), b.contiguous(), s.contiguous(), index_a.contiguous(),
                                                      index_b.contiguous(), out, c, p, **launch.kwargs())  # fmt: skip
    return out


def _points(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, index_a: torch.Tensor, index_b: torch.Tensor) -> torch.Tensor:
    _require(a, b, w)
    _, c, _, p = a.shape
    e, _, _, k = w.shape
    launch = launch_config("quad_points", (a.shape, b.shape, w.shape))
    out = torch.empty((e, k, p), dtype=a.dtype, device=a.device)
    if e == 0:
        return out
    _kernels()["points"][(e, launch.channel_blocks)](a.contiguous(), b.contiguous(), w.contiguous(), index_a.contiguous(),
                                                     index_b.contiguous(), out, c, p, **launch.kwargs())  # fmt: skip
    return out


quad_nodes_triton, quad_weights_triton, quad_points_triton = define_primitives("_triton", _nodes, _weights, _points)


def triton_conv(
    f: torch.Tensor, w: torch.Tensor, s: torch.Tensor, edge_index: Optional[torch.Tensor], keep_degrees: bool = False
) -> torch.Tensor:
    """:func:`._conv_primitives.primitive_conv` with the Triton kernels."""
    src, dst = edge_rows(f, edge_index)
    if keep_degrees:
        return torch.ops.mace_gaunt.quad_nodes_triton(f, w, s, src, dst, f.shape[2])
    return torch.ops.mace_gaunt.quad_nodes_triton(f, w, s, src, dst, 1).squeeze(2)
