"""The Gaunt conv as one quadrilinear form, and the three primitives that contract it.

Pure torch (no MACE, no e3nn). DESIGN.md section 8.1 has the background.

The form
--------
For node operands ``A, B [N, C, J, P]`` (channels ``C``, degree axis ``J``, points ``P``),
radial weights ``W [E, C, J, K]`` (``K`` edge degrees), edge degree slices on the points
``S [E, K, P]`` and per-edge node indices ``ia, ib [E]``::

    T(A, B, W, S) = sum_e sum_{c, j, k, p} A[ia_e, c, j, p] B[ib_e, c, j, p] W[e, c, j, k] S[e, k, p]

The degree axis ``j`` has length ``J`` or 1 in each of ``A``, ``B``, ``W`` (1 means
broadcast: that operand does not depend on ``j``). For ``conv_weights="l2"`` every
operand has ``J = 1``. For ``"l1l2"`` the sender functions are split per input degree
``l1`` (``B = F [N, C, n_in, P]``, ``sum_j F[:, :, j] = to_points(x)``) and the weights
have one column per ``l1`` (``W [E, C, n_in, K]``), while the receiver cotangent has
``J = 1``: the sum over ``l1`` is taken per edge, before the sum onto the receivers.
For ``"path"`` the degree axis runs over the CG paths ``(l1, l2, l3)`` of one ``l2`` (one
call per ``l2``, ``K = 1``) and the receivers keep it (``j_out = J``, ``keep_degrees``):
each path is projected onto its own ``l3`` afterwards.

The conv is ``Z = dT/dA`` at ``A``'s place with ``ia = receivers``, ``ib = senders``::

    Z[n, c, p] = sum_{e: dst_e = n} sum_j F[src_e, c, j, p] sum_k W[e, c, j, k] S[e, k, p]

Primitives
----------
Each returns the gradient of ``T`` with respect to one operand; the gradient of any of
them is again one of them with the operands' roles swapped (see ``_backward_*``), so one
set of three custom operators gives the forward, forces (first derivative), force
training (second) and every higher derivative with no further code:

``quad_nodes(x, w, s, gather, scatter, j_out) -> [N, C, j_out, P]``
    ``dT/dA`` with ``B = x`` gathered at ``gather`` and the result summed at ``scatter``
    (the conv forward; with the indices swapped, the gradient for the senders).
``quad_weights(a, b, s, index_a, index_b, j_out) -> [E, C, j_out, K]``
    ``dT/dW``: per edge, a reduction over points.
``quad_points(a, b, w, index_a, index_b) -> [E, K, P]``
    ``dT/dS``: per edge, a reduction over channels (and ``j``).

``j_out`` is the degree-axis length of the operand whose gradient is returned: 1 sums the
degree axis, ``J`` keeps it.

They are torch custom operators (``torch.ops.mace_gaunt.quad_*``, registered when this
module is imported), with autograd formulas and fake (meta) implementations, so
TorchScript, ``torch.compile`` and ``torch.export`` see them as single ops. A TorchScript
file that calls them loads only in a process that imported ``mace_gaunt_plugin`` (pure
libtorch has no Python to run them): see :mod:`._sphere_sites` for which path exports use.

Memory
------
The implementation loops over chunks of edges; a chunk holds at most about
:func:`chunk_budget` bytes of ``[edges, C, J, P]`` temporaries (default 64 MiB). No
``[E, C, P]`` tensor is kept for the backward: autograd saves the operands only (node
tensors ``[N, ...]``, ``W``, ``S``), and the backward rebuilds the per-edge products chunk by
chunk. Works on every device PyTorch runs on, any floating dtype, ``E = 0``, nodes without
edges, unsorted and repeated edges.

Examples
--------
>>> import torch
>>> n, e, c, k, p = 4, 6, 3, 2, 5
>>> f, g = torch.randn(n, c, 1, p), torch.randn(n, c, 1, p)
>>> w, s = torch.randn(e, c, 1, k), torch.randn(e, k, p)
>>> src, dst = torch.randint(0, n, (e,)), torch.randint(0, n, (e,))
>>> z = torch.ops.mace_gaunt.quad_nodes(f, w, s, src, dst, 1)
>>> t = (g * z).sum()
>>> dw = torch.ops.mace_gaunt.quad_weights(g, f, s, dst, src, 1)
>>> bool(torch.allclose((dw * w).sum(), t, atol=1e-4))
True
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

__all__ = [
    "quad_nodes",
    "quad_weights",
    "quad_points",
    "chunk_budget",
    "set_chunk_budget",
    "limited_chunk_budget",
    "NAMESPACE",
    "define_primitives",
    "reference_conv",
    "primitive_conv",
]

NAMESPACE = "mace_gaunt"

_BUDGET = {"bytes": 64 << 20}


def chunk_budget() -> int:
    """Bytes of per-chunk temporaries the primitives aim at (process-wide)."""
    return _BUDGET["bytes"]


def set_chunk_budget(nbytes: int) -> int:
    """Set the per-chunk budget in bytes (at least 1: one edge per chunk); returns the old one."""
    if int(nbytes) < 1:
        raise ValueError(f"chunk budget must be >= 1 byte, got {nbytes}")
    old = _BUDGET["bytes"]
    _BUDGET["bytes"] = int(nbytes)
    return old


@contextlib.contextmanager
def limited_chunk_budget(nbytes: int) -> Iterator[int]:
    """Context manager: run with another chunk budget (tests use tiny ones to force many chunks)."""
    old = set_chunk_budget(nbytes)
    try:
        yield nbytes
    finally:
        set_chunk_budget(old)


def _chunk(n_edges: int, row_elems: int, itemsize: int) -> int:
    """Edges per chunk: about three ``[edges, row_elems]`` temporaries within the budget."""
    per_edge = max(1, 3 * row_elems * itemsize)
    return max(1, min(max(n_edges, 1), _BUDGET["bytes"] // per_edge))


def _check(name: str, cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(f"mace_gaunt::{name}: {msg}")


def _degree_axis(name: str, *sizes: int) -> int:
    big = max(sizes)
    _check(name, all(s in (1, big) for s in sizes), f"degree-axis lengths must be 1 or one common J, got {list(sizes)}")
    return big


def _to_j(t: torch.Tensor, j_out: int) -> torch.Tensor:
    """Sum (``j_out == 1``) or broadcast (``t`` has 1) the degree axis (dim 2) to ``j_out``."""
    if t.shape[2] == j_out:
        return t
    if j_out == 1:
        return t.sum(2, keepdim=True)
    _check("quad", t.shape[2] == 1, f"cannot map a degree axis of {t.shape[2]} to {j_out}")
    return t.expand(t.shape[0], t.shape[1], j_out, t.shape[3])


# --------------------------------------------------------------------------- implementations


def _quad_nodes_impl(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor, gather: torch.Tensor, scatter: torch.Tensor, j_out: int) -> torch.Tensor:
    n, c, jx, p = x.shape
    e, _, jw, k = w.shape
    jj = _degree_axis("quad_nodes", jx, jw, j_out)
    _check("quad_nodes", w.shape[1] == c and s.shape == (e, k, p), f"shapes x {tuple(x.shape)}, w {tuple(w.shape)}, s {tuple(s.shape)} disagree")
    _check("quad_nodes", gather.shape == (e,) and scatter.shape == (e,), "gather and scatter must be [E]")
    out = x.new_zeros((n, c, j_out, p))
    step = _chunk(e, c * jj * p, x.element_size())
    for lo in range(0, e, step):
        hi = min(e, lo + step)
        h = torch.bmm(w[lo:hi].reshape(hi - lo, c * jw, k), s[lo:hi]).view(hi - lo, c, jw, p)
        prod = _to_j(x.index_select(0, gather[lo:hi]) * h, j_out)
        out.index_add_(0, scatter[lo:hi], prod)
    return out


def _pair(a: torch.Tensor, b: torch.Tensor, index_a: torch.Tensor, index_b: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    return a.index_select(0, index_a[lo:hi]) * b.index_select(0, index_b[lo:hi])


def _quad_weights_impl(a: torch.Tensor, b: torch.Tensor, s: torch.Tensor, index_a: torch.Tensor, index_b: torch.Tensor, j_out: int) -> torch.Tensor:
    n, c, ja, p = a.shape
    e, k, _ = s.shape
    jj = _degree_axis("quad_weights", ja, b.shape[2], j_out)
    _check("quad_weights", b.shape[0] == n and b.shape[1] == c and b.shape[3] == p and s.shape[2] == p, f"shapes a {tuple(a.shape)}, b {tuple(b.shape)}, s {tuple(s.shape)} disagree")
    _check("quad_weights", index_a.shape == (e,) and index_b.shape == (e,), "indices must be [E]")
    out = a.new_empty((e, c, j_out, k))
    step = _chunk(e, c * jj * p, a.element_size())
    for lo in range(0, e, step):
        hi = min(e, lo + step)
        ab = _pair(a, b, index_a, index_b, lo, hi)
        if j_out == 1:
            ab = _to_j(ab, 1)
        jab = ab.shape[2]
        dw = torch.bmm(ab.reshape(hi - lo, c * jab, p), s[lo:hi].transpose(1, 2)).view(hi - lo, c, jab, k)
        out[lo:hi] = _to_j(dw, j_out)
    return out


def _quad_points_impl(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor, index_a: torch.Tensor, index_b: torch.Tensor) -> torch.Tensor:
    n, c, ja, p = a.shape
    e, _, jw, k = w.shape
    jj = _degree_axis("quad_points", ja, b.shape[2], jw)
    _check("quad_points", b.shape[0] == n and b.shape[1] == c and b.shape[3] == p and w.shape[1] == c, f"shapes a {tuple(a.shape)}, b {tuple(b.shape)}, w {tuple(w.shape)} disagree")
    _check("quad_points", index_a.shape == (e,) and index_b.shape == (e,), "indices must be [E]")
    out = a.new_empty((e, k, p))
    step = _chunk(e, c * jj * p, a.element_size())
    for lo in range(0, e, step):
        hi = min(e, lo + step)
        ab = _pair(a, b, index_a, index_b, lo, hi)
        wc = w[lo:hi]
        if ab.shape[2] != wc.shape[2]:  # one side has no degree axis: sum the other's first
            if ab.shape[2] == 1:
                wc = wc.sum(2, keepdim=True)
            else:
                ab = ab.sum(2, keepdim=True)
        jab = ab.shape[2]
        out[lo:hi] = torch.bmm(wc.reshape(hi - lo, c * jab, k).transpose(1, 2), ab.reshape(hi - lo, c * jab, p))
    return out


# --------------------------------------------------------------------------- custom operators

_SCHEMAS = {
    "quad_nodes": "(Tensor x, Tensor w, Tensor s, Tensor gather, Tensor scatter, int j_out) -> Tensor",
    "quad_weights": "(Tensor a, Tensor b, Tensor s, Tensor index_a, Tensor index_b, int j_out) -> Tensor",
    "quad_points": "(Tensor a, Tensor b, Tensor w, Tensor index_a, Tensor index_b) -> Tensor",
}


def _fake_nodes(x, w, s, gather, scatter, j_out):  # noqa: ANN001, ANN202
    return x.new_empty((x.shape[0], x.shape[1], j_out, x.shape[3]))


def _fake_weights(a, b, s, index_a, index_b, j_out):  # noqa: ANN001, ANN202
    return a.new_empty((s.shape[0], a.shape[1], j_out, s.shape[1]))


def _fake_points(a, b, w, index_a, index_b):  # noqa: ANN001, ANN202
    return a.new_empty((w.shape[0], w.shape[3], a.shape[3]))


def _save(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(*[t for t in inputs if isinstance(t, torch.Tensor)])


def define_primitives(suffix: str, nodes_impl, weights_impl, points_impl) -> tuple:  # noqa: ANN001
    """Register one family ``mace_gaunt::quad_{nodes,weights,points}{suffix}`` with these
    implementations (same signatures as :func:`quad_nodes` ...), fake kernels and the
    autograd formulas, which call the same family: each backward is the three operators
    with the roles of the operands swapped (the cotangent ``g`` takes the place of the
    operand that was returned). Returns the three operators."""
    nodes = torch.library.custom_op(f"{NAMESPACE}::quad_nodes{suffix}", nodes_impl, mutates_args=(), schema=_SCHEMAS["quad_nodes"])
    weights = torch.library.custom_op(f"{NAMESPACE}::quad_weights{suffix}", weights_impl, mutates_args=(), schema=_SCHEMAS["quad_weights"])
    points = torch.library.custom_op(f"{NAMESPACE}::quad_points{suffix}", points_impl, mutates_args=(), schema=_SCHEMAS["quad_points"])

    def backward_nodes(ctx, g: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:  # noqa: ANN001
        x, w, s, gather, scatter = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx = nodes(g, w, s, scatter, gather, x.shape[2]) if need[0] else None
        dw = weights(g, x, s, scatter, gather, w.shape[2]) if need[1] else None
        ds = points(g, x, w, scatter, gather) if need[2] else None
        return dx, dw, ds, None, None, None

    def backward_weights(ctx, g: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:  # noqa: ANN001
        a, b, s, index_a, index_b = ctx.saved_tensors
        need = ctx.needs_input_grad
        da = nodes(b, g, s, index_b, index_a, a.shape[2]) if need[0] else None
        db = nodes(a, g, s, index_a, index_b, b.shape[2]) if need[1] else None
        ds = points(a, b, g, index_a, index_b) if need[2] else None
        return da, db, ds, None, None, None

    def backward_points(ctx, g: torch.Tensor) -> tuple[Optional[torch.Tensor], ...]:  # noqa: ANN001
        a, b, w, index_a, index_b = ctx.saved_tensors
        need = ctx.needs_input_grad
        da = nodes(b, w, g, index_b, index_a, a.shape[2]) if need[0] else None
        db = nodes(a, w, g, index_a, index_b, b.shape[2]) if need[1] else None
        dw = weights(a, b, g, index_a, index_b, w.shape[2]) if need[2] else None
        return da, db, dw, None, None

    for op, fake, backward in ((nodes, _fake_nodes, backward_nodes), (weights, _fake_weights, backward_weights), (points, _fake_points, backward_points)):
        op.register_fake(fake)
        op.register_autograd(backward, setup_context=_save)
    return nodes, weights, points


quad_nodes, quad_weights, quad_points = define_primitives("", _quad_nodes_impl, _quad_weights_impl, _quad_points_impl)
quad_nodes.__doc__ = """``out[scatter_e, c, j, p] += x[gather_e, c, j, p] * sum_k w[e, c, j, k] s[e, k, p]``,
the degree axis summed or broadcast to ``j_out``; ``out`` has ``x``'s rows."""
quad_weights.__doc__ = """``out[e, c, j, k] = sum_p a[index_a_e, c, j, p] b[index_b_e, c, j, p] s[e, k, p]``,
the degree axis summed or broadcast to ``j_out``."""
quad_points.__doc__ = """``out[e, k, p] = sum_{c, j} a[index_a_e, c, j, p] b[index_b_e, c, j, p] w[e, c, j, k]``."""


# --------------------------------------------------------------------------- the conv


def reference_conv(
    f: torch.Tensor, w: torch.Tensor, s: torch.Tensor, edge_index: Optional[torch.Tensor], keep_degrees: bool = False
) -> torch.Tensor:
    """The conv ``Z`` with plain PyTorch ops, differentiated by autograd (kernel ``reference``).

    ``f [N, C, J, P]``, ``w [E, C, J, K]``, ``s [E, K, P]``; with ``edge_index [2, E]``
    (senders, receivers) the result ``[N, C, P]`` is summed onto receivers, without it
    ``f`` is per edge (``N = E``) and so is the result. ``keep_degrees`` keeps the degree
    axis (result ``[rows, C, J, P]``, ``j_out = J``: one output per path for
    ``conv_weights="path"``) instead of summing it. Runs wherever TorchScript runs (pure
    libtorch included), but autograd keeps the ``[E, C * J, P]`` edge functions and
    sender values for the backward.
    """
    n, c, j, p = f.shape
    e, k = s.shape[0], s.shape[1]
    h = torch.bmm(w.reshape(e, c * j, k), s)  # [E, C * J, P]
    fj = f.reshape(n, c * j, p)
    if edge_index is None:
        prod = fj * h
    else:
        prod = fj.index_select(0, edge_index[0]) * h
    width = c * j
    if j > 1 and not keep_degrees:
        prod = prod.reshape(e, c, j, p).sum(2)
        width = c
    if edge_index is not None:
        prod = torch.zeros((n, width, p), dtype=prod.dtype, device=prod.device).index_add(0, edge_index[1], prod)
    if keep_degrees:
        return prod.reshape(prod.shape[0], c, j, p)
    return prod


def primitive_conv(
    f: torch.Tensor, w: torch.Tensor, s: torch.Tensor, edge_index: Optional[torch.Tensor], keep_degrees: bool = False
) -> torch.Tensor:
    """The same ``Z`` as :func:`reference_conv` through :func:`quad_nodes` (kernel ``torch``):
    no ``[E, C, P]`` tensor is stored for the backward, at any derivative order."""
    src, dst = edge_rows(f, edge_index)
    if keep_degrees:
        return torch.ops.mace_gaunt.quad_nodes(f, w, s, src, dst, f.shape[2])
    return torch.ops.mace_gaunt.quad_nodes(f, w, s, src, dst, 1).squeeze(2)


def edge_rows(f: torch.Tensor, edge_index: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(senders, receivers); without ``edge_index`` (per-edge rows) both are ``arange(E)``."""
    if edge_index is None:
        rows = torch.arange(f.shape[0], device=f.device)
        return rows, rows
    return edge_index[0], edge_index[1]
