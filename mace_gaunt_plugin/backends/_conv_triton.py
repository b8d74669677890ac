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
from typing import Any, Optional

import torch

from ._conv_primitives import _degree_axis, define_primitives, edge_rows

__all__ = ["triton_available", "triton_unavailable_reason", "triton_conv"]


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


def _kernels() -> Any:
    """The compiled kernels; Triton's interpreter decides at decoration time, so they are
    built once per value of ``TRITON_INTERPRET``."""
    return _build_kernels(os.environ.get("TRITON_INTERPRET") == "1")


@functools.lru_cache(maxsize=None)
def _build_kernels(interpret: bool) -> Any:
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

    return nodes_kernel, weights_kernel, points_kernel


def _require(*tensors: torch.Tensor) -> None:
    why = triton_unavailable_reason()
    if why is not None:
        raise RuntimeError(f"mace_gaunt triton kernels: {why}")
    if os.environ.get("TRITON_INTERPRET") != "1" and not all(t.is_cuda for t in tensors):
        raise RuntimeError("mace_gaunt triton kernels need CUDA tensors (use kernel='torch' on CPU)")


def _blocks(c: int, p: int) -> tuple[int, int]:
    bp = _p2(p)
    return max(1, min(_p2(c), max(1, 4096 // bp))), bp


def _nodes(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor, gather: torch.Tensor, scatter: torch.Tensor, j_out: int) -> torch.Tensor:
    _require(x, w, s)
    n, c, jx, p = x.shape
    e, _, jw, k = w.shape
    jj = _degree_axis("quad_nodes_triton", jx, jw, j_out)
    out = torch.zeros((n, c, j_out, p), dtype=x.dtype, device=x.device)
    if e == 0:
        return out
    bc, bp = _blocks(c, p)
    nodes_kernel, _, _ = _kernels()
    nodes_kernel[(e, -(-c // bc))](x.contiguous(), w.contiguous(), s.contiguous(), gather.contiguous(), scatter.contiguous(), out,
                                   c, p, JX=jx, JW=jw, J=jj, JO=j_out, K=k, BC=bc, BP=bp)  # fmt: skip
    return out


def _weights(a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, index_a: torch.Tensor, index_b: torch.Tensor, j_out: int) -> torch.Tensor:
    _require(a, b, s)
    n, c, ja, p = a.shape
    e, k, _ = s.shape
    jj = _degree_axis("quad_weights_triton", ja, b.shape[2], j_out)
    out = torch.empty((e, c, j_out, k), dtype=a.dtype, device=a.device)
    if e == 0:
        return out
    bc, bp = _blocks(c, p)
    _, weights_kernel, _ = _kernels()
    weights_kernel[(e, -(-c // bc))](a.contiguous(), b.contiguous(), s.contiguous(), index_a.contiguous(), index_b.contiguous(), out,
                                     c, p, JA=ja, JB=b.shape[2], J=jj, JO=j_out, K=k, BC=bc, BP=bp)  # fmt: skip
    return out


def _points(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, index_a: torch.Tensor, index_b: torch.Tensor) -> torch.Tensor:
    _require(a, b, w)
    n, c, ja, p = a.shape
    e, _, jw, k = w.shape
    jj = _degree_axis("quad_points_triton", ja, b.shape[2], jw)
    out = torch.empty((e, k, p), dtype=a.dtype, device=a.device)
    if e == 0:
        return out
    bk, bp = _p2(k), _p2(p)
    bc = max(1, min(_p2(c), max(1, 4096 // (bk * bp))))
    _, _, points_kernel = _kernels()
    points_kernel[(e,)](a.contiguous(), b.contiguous(), w.contiguous(), index_a.contiguous(), index_b.contiguous(), out,
                        c, p, JA=ja, JB=b.shape[2], JW=jw, J=jj, K=k, BK=bk, BC=bc, BP=bp)  # fmt: skip
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
