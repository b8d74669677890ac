"""Site modules of the Gaunt family (``grid``, ``gaunt``), written against a sphere engine.

A Gaunt tensor product multiplies two functions on the sphere and projects the product
back onto spherical harmonics. The site modules here say *what* is computed (which
functions, which weights, which normalisation, which layout); a **sphere engine** says
*how* functions are moved to a representation where products are pointwise ("points")
and back. Two backends that use the same site modules with different engines compute
the same function with the same weights: ``grid`` (Gauss-Legendre x uniform-phi grid,
:mod:`.grid_backend`) and ``gaunt`` (2D Fourier basis with FFTs, :mod:`.gaunt_backend`).

Sphere engine interface
-----------------------
An engine is built by a factory ``engine_factory(spec: EngineSpec) -> torch.nn.Module``.
It must be TorchScript-able, hold its tables as buffers only (float64 math converted to
``torch.get_default_dtype()`` at construction, so ``.to(device/dtype)`` moves them) and
provide::

    num_points: int                      # P, the size of the "points" representation
    to_points(x [..., K_in]) -> [..., P]
        f = sum_lm x_lm Y_lm for the degrees spec.degrees_in (ascending, e3nn order).
    to_points_split(x [..., K_in]) -> [..., n_in, P]
        the same, one slice per input degree (sum over dim -2 gives to_points).
    edge_points(y [E, K_edge]) -> [E, n_edge, P]
        g_l = sum_m y_lm Y_lm, one slice per degree of spec.degrees_edge.
    from_points(v [..., P]) -> [..., K_out]
        z_lm = integral v Y_lm for the degrees spec.degrees_out; exact whenever v is a
        pointwise product of functions of total degree <= spec.product_degree.

``Y_lm`` are e3nn's real spherical harmonics, *integral* normalised (the integral of
``Y_lm**2`` is 1); ``K = sum over degrees of (2l + 1)`` with components ordered by
ascending degree, ``m = -l..l``. The site modules only ever combine points with pointwise
products, sums over edges (``index_add`` on dim 0) and batched matmuls over leading dims,
so any representation in which the product of two functions is pointwise works.

Conv site (:class:`SphereConv`)
-------------------------------
For each edge, ``f_c = sum_l1m1 x1[c, l1m1] Y_l1m1`` (sender features, channel ``c``) and
the edge function ``h_c = sum_l2 w[c, l2] sum_m2 x2[l2m2] Y_l2m2`` (``x2``: MACE's
component-normalised edge spherical harmonics, used as given; ``w``: radial-MLP output),
output ``z[c, l3m3] = a_l3 * integral f_c h_c Y_l3m3`` summed over the edges into a
receiver. Parametrisations (option ``conv_weights``):

``"l2"`` (default)
    one weight per (channel, l2): ``weight_numel = C * n_l2``, weight layout
    ``[E, C, n_l2]`` (channel-major). This is Luo et al.'s MACE-Gaunt convolution.
``"l1l2"``
    one weight per (channel, l1, l2): ``h_{c,l1}``, ``z = a_l3 * integral
    sum_l1 f_{c,l1} h_{c,l1} Y_l3m3``; ``weight_numel = C * n_l1 * n_l2``, layout
    ``[E, C, n_l1, n_l2]``. Richer, (L1+1)x the per-edge memory.
``"path"``
    one weight per (channel, path ``(l1, l2, l3)``), exactly MACE's conv: the output
    irreps are MACE's ``irreps_mid`` (one ``C x l3`` block per path, in the order of
    ``mace.modules.irreps_tools.tp_out_irreps_with_instructions``) and the weights are in
    e3nn's ``uvu`` layout (``weight_numel = n_paths * C``, ``[E, n_paths, C]``). For
    natural-parity features MACE uses exactly the paths with ``l1 + l2 + l3`` even, where
    the Gaunt coefficients are the CG coefficients times a constant; that constant and
    e3nn's path normalisation are a fixed per-path factor (:func:`path_scales`), so the
    same radial-MLP weights give e3nn's conv output (to rounding). Per edge, the points
    work is ``n_paths`` products per channel instead of one: the degree axis ``J`` of the
    primitives runs over the paths of one ``l2`` (one call per ``l2``) and is kept to the
    receivers, where each path is projected onto its ``l3``.
``"node_path"``
    between ``l1l2`` and ``path`` (DESIGN.md 9.3): ``l1l2`` radial weights (one per channel
    and degree pair ``(l1, l2)`` that some path uses, ``weight_numel = C * n_pairs``,
    layout ``[E, C, n_pairs]``) and ``path``'s output: MACE's ``irreps_mid``, one
    ``C x l3`` block per path, each ``s_p Proj_l3(f_{c,l1} w[c, l1, l2] g_l2)`` summed over
    edges. The per-path weights are then applied at the node, by the ``linear`` MACE puts
    after the conv (per output channel, input channel and path), on ``N`` nodes instead
    of ``E`` edges; what is lost against ``path`` is only the radial dependence of the
    ``l3`` weight. Per edge the pairs are summed into a few *receiver slots*
    (:func:`node_path_slots`: pairs of one ``l1`` whose output degrees do not overlap
    share a slot), so the points work is one product per (channel, slot), e.g. 3 slots
    for hidden L = 1 and edge L = 3 against ``path``'s 10 paths and ``l1l2``'s 2
    per-``l1`` products. With the same radial weights it equals ``path`` with each
    path's weight set to its pair's.

Kernels (option ``kernel``)
---------------------------
On the points the conv is ``Z = dT/dG`` of one quadrilinear form ``T(G, F, W, S)``
(:mod:`._conv_primitives`; ``F = to_points(x1)`` per node, ``S = edge_points(x2)`` per
edge, ``W`` the weights), then ``from_points(Z)``. Who computes ``Z``:

``"torch"``
    the primitives ``torch.ops.mace_gaunt.quad_*`` (PyTorch, edge chunks); autograd
    stores no ``[E, C, P]`` tensor, at any derivative order.
``"triton"``
    the same primitives as Triton kernels (:mod:`._conv_triton`); refused at build time
    when Triton or CUDA is missing.
``"auto"`` (default)
    :data:`AUTO_CUDA_KERNEL` on CUDA tensors, ``torch`` elsewhere (decided per call from
    the tensors' device; ``kernel_in_use()`` and the repr say which). That is ``torch``
    until a GPU run has timed the Triton kernels against it (``benchmarks/gpu/run_all.sh``
    prints which one ``auto`` should take): they compile for sm_80/sm_90 in CI but have
    run only under Triton's interpreter so far.
``"reference"``
    the plain PyTorch formulation this module had before the primitives (autograd keeps
    the ``[E, C, P]`` edge functions and sender values): the oracle of the tests, and what
    TorchScript files hold by default (below).

TorchScript: custom operators registered from Python exist only in a process that
imported this plugin. So that ``*_compiled.model`` and MACE's libtorch LAMMPS export
(``mace_create_lammps_model``, read by ``pair_style mace`` in pure libtorch) keep loading
anywhere, a scripted conv holds the ``reference`` formulation (the same function to
rounding) unless :func:`use_primitives_in_torchscript` was called on the model before
scripting: then it calls the primitives (lower memory in TorchScript too), and the file
loads only where ``mace_gaunt_plugin`` is imported (our ML-IAP wrapper, a Python
``MACECalculator``).

Normalisation (``l2``, ``l1l2``): ``a_l3 = (sum_{l1,l2} |G(l1,l2,l3)|^2 / (2 l3 + 1)) ** -1/2`` with ``G`` the
Gaunt coefficients over the degrees present, so that unit-variance features, unit-variance
weights and component-normalised edge harmonics give unit-variance outputs, as each
path block of e3nn's component-normalised ``uvu`` tensor product does.

Product site (:class:`SphereProduct`)
-------------------------------------
Luo et al.'s many-body basis ``B_{c,L} = sum_{nu=1..correlation} w_nu(Z, c, L) b_{nu,L}
Proj_L(f_c**nu)`` with ``f_c = sum_lm A[c, lm] Y_lm``. ``b_{nu,L}`` is the inverse RMS of
``Proj_L(f**nu)`` for ``A ~ N(0, 1)``, computed exactly (Isserlis plus Funk-Hecke, see
:func:`power_projection_rms`). Weights ``[n_elements, C, correlation, n_L]`` initialised
``N(0, 1) / sqrt(correlation)``; ``node_attrs @ weights`` selects them per node. Options
``product_basis="factors"`` and ``"cp"`` (with ``product_rank``) replace ``f**nu`` by
products of differently reweighted copies of ``A`` (see :class:`SphereProduct`); ``cp`` has
:func:`product_terms` projected products, so its weights are ``[n_elements, C, n_terms,
n_L]``, initialised ``N(0, 1) / sqrt(n_terms)``, each term normalised as its order's power.
"""

import importlib.util
import math
from dataclasses import dataclass
from typing import Any, Callable, Final, List, Mapping, Optional, Sequence

import numpy as np
import torch
from e3nn import o3
from e3nn.util.jit import compile_mode

from ..errors import BackendOptionError, UnsupportedIrrepsError
from ..so3 import gaunt_coefficients, gaunt_path_allowed
from ._conv_primitives import primitive_conv, reference_conv
from ._conv_triton import triton_conv, triton_unavailable_reason
from .base import BackendModule, require_natural_parity, require_uniform_multiplicity

__all__ = [
    "EngineSpec",
    "SphereConv",
    "SphereProduct",
    "conv_degrees_out",
    "conv_normalisation",
    "power_projection_rms",
    "CONV_WEIGHTS",
    "PER_PATH_OUTPUTS",
    "mace_conv_paths",
    "node_path_slots",
    "path_scales",
    "CONV_KERNELS",
    "AUTO_CUDA_KERNEL",
    "use_primitives_in_torchscript",
]

CONV_WEIGHTS = ("l2", "l1l2", "path", "node_path")
#: conv parametrisations whose output irreps are MACE's ``irreps_mid`` (one block per path)
PER_PATH_OUTPUTS = ("path", "node_path")
CONV_KERNELS = ("auto", "torch", "triton", "reference")
#: what ``kernel="auto"`` runs on CUDA tensors (``"torch"`` or ``"triton"``, the latter only
#: where Triton imports): the one place to change once a GPU run has measured both.
AUTO_CUDA_KERNEL = "torch"
PRODUCT_BASES = ("power", "factors", "cp")

EngineFactory = Callable[["EngineSpec"], torch.nn.Module]


def _auto_takes_triton(kernel: str) -> bool:
    """Whether a conv with this ``kernel`` option runs Triton on CUDA tensors under ``auto``."""
    return kernel == "auto" and AUTO_CUDA_KERNEL == "triton" and importlib.util.find_spec("triton") is not None


@dataclass(frozen=True)
class EngineSpec:
    """What a sphere engine must represent exactly.

    Attributes
    ----------
    degrees_in : tuple of int
        Degrees of the coefficients given to ``to_points`` / ``to_points_split`` (ascending).
    degrees_edge : tuple of int
        Degrees given to ``edge_points`` (ascending; empty for the product site).
    degrees_out : tuple of int
        Degrees ``from_points`` returns (ascending).
    product_degree : int
        Largest polynomial degree of a pointwise product that ``from_points`` must project
        exactly (conv: ``max(in) + max(edge)``; product: ``correlation * max(in)``).
    """

    degrees_in: tuple[int, ...]
    degrees_edge: tuple[int, ...]
    degrees_out: tuple[int, ...]
    product_degree: int

    @property
    def quadrature_degree(self) -> int:
        """Total degree a quadrature must integrate exactly: product times output harmonic."""
        return self.product_degree + max(self.degrees_out)


def _dim(degrees: Sequence[int]) -> int:
    return sum(2 * l + 1 for l in degrees)


def _set_widths(module: torch.nn.Module) -> None:
    """Row widths the forward reshapes to (named, not ``-1``: zero rows are allowed), for
    site modules pickled before these attributes existed."""
    state = module.__dict__
    if "degrees_in" in state and "k_in" not in state and hasattr(module, "degrees_edge"):
        state["k_in"] = _dim(state["degrees_in"])
    if "degrees_out" in state and "out_width" not in state:
        state["out_width"] = int(state["channels"]) * _dim(state["degrees_out"])


def _offsets(degrees: Sequence[int]) -> dict[int, int]:
    out, off = {}, 0
    for l in degrees:
        out[l] = off
        off += 2 * l + 1
    return out


def _degrees_once(backend: str, irreps: o3.Irreps, what: str) -> tuple[int, ...]:
    ls = [ir.l for _, ir in irreps]
    if len(set(ls)) != len(ls):
        raise UnsupportedIrrepsError(
            backend, str(irreps), f"{what} list a degree more than once", "Simplify the irreps (e3nn's Irreps.simplify())."
        )
    return tuple(ls)


def _mul_ir_to_channels(irreps: o3.Irreps, degrees: Sequence[int]) -> torch.Tensor:
    """Index ``idx`` with ``x_mul_ir[..., idx].view(..., C, K) == x in [C, K] layout``."""
    pos: dict[tuple[int, int, int], int] = {}
    off = 0
    for mul, ir in irreps:
        for c in range(mul):
            for m in range(ir.dim):
                pos[(c, ir.l, m)] = off + c * ir.dim + m
        off += mul * ir.dim
    mul = irreps[0].mul
    return torch.tensor([pos[(c, l, m)] for c in range(mul) for l in degrees for m in range(2 * l + 1)], dtype=torch.long)


def _channels_to_mul_ir(irreps: o3.Irreps, degrees: Sequence[int]) -> torch.Tensor:
    """Index ``idx`` with ``y.view(..., C * K)[..., idx] == y in irreps' mul_ir layout``."""
    k_dim = _dim(degrees)
    offs = _offsets(degrees)
    idx = []
    for mul, ir in irreps:
        for c in range(mul):
            for m in range(ir.dim):
                idx.append(c * k_dim + offs[ir.l] + m)
    return torch.tensor(idx, dtype=torch.long)


def _paths_to_mul_ir(
    paths: Sequence[tuple[int, int, int]], position: Sequence[int], channels: int, degrees_out: Sequence[int], n_rows: Optional[int] = None
) -> torch.Tensor:
    """Index ``idx`` with ``y.view(..., C * n_rows * K_out)[..., idx]`` = MACE's ``irreps_mid``
    layout (block ``j`` = path ``j``: its ``l3`` components, channel-major), path ``j`` being
    at ``position[j]`` of the path axis of ``y`` (``n_rows`` long; default one row per path)."""
    k_dim, n = _dim(degrees_out), len(paths) if n_rows is None else n_rows
    offs = _offsets(degrees_out)
    idx = [
        c * n * k_dim + position[j] * k_dim + offs[l3] + m for j, (_, _, l3) in enumerate(paths) for c in range(channels) for m in range(2 * l3 + 1)
    ]
    return torch.tensor(idx, dtype=torch.long)


def _paths_by_edge_degree(paths: Sequence[tuple[int, int, int]], degrees_edge: Sequence[int]) -> tuple[list[int], list[int]]:
    """The order the conv keeps the paths in (grouped by ``l2``, MACE's order inside a
    group: each group is one primitive call with one edge slice, ``K = 1``), and the group
    sizes (one per edge degree, possibly 0)."""
    order = sorted(range(len(paths)), key=lambda j: (list(degrees_edge).index(paths[j][1]), j))
    return order, [sum(1 for _, b, _ in paths if b == l2) for l2 in degrees_edge]


def node_path_slots(
    paths: Sequence[tuple[int, int, int]], degrees_in: Sequence[int], degrees_edge: Sequence[int]
) -> tuple[list[tuple[int, int]], list[list[tuple[int, int]]], list[int]]:
    """How ``conv_weights="node_path"`` packs the degree pairs ``(l1, l2)`` into receiver slots.

    Returns ``(pairs, slots, slot_of_path)``: ``pairs`` are the distinct ``(l1, l2)`` of the
    paths (the weight layout, ``[E, C, n_pairs]``, ordered by ``l1`` then ``l2``); each slot
    is a list of pairs with one ``l1`` whose sets of output degrees ``l3`` (among ``paths``)
    are disjoint, so that ``Proj_l3`` of the slot's receiver sum is the one path
    ``(l1, l2, l3)`` of the slot that reaches ``l3``; ``slot_of_path[p]`` is the slot of path
    ``p``. Pairs are placed greedily (first slot that fits), one ``l1`` at a time.

    >>> paths = [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, 2), (1, 2, 1)]
    >>> pairs, slots, where = node_path_slots(paths, (0, 1), (0, 1, 2))
    >>> slots
    [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(1, 2)]]
    >>> where
    [0, 0, 1, 1, 1, 2]
    """
    d_in, d_edge = list(degrees_in), list(degrees_edge)
    pairs = sorted({(l1, l2) for l1, l2, _ in paths}, key=lambda q: (d_in.index(q[0]), d_edge.index(q[1])))
    reach = {q: {l3 for l1, l2, l3 in paths if (l1, l2) == q} for q in pairs}
    slots: list[list[tuple[int, int]]] = []
    used: list[set[int]] = []
    for l1 in d_in:
        first = len(slots)
        for q in (q for q in pairs if q[0] == l1):
            for j in range(first, len(slots)):
                if not used[j] & reach[q]:
                    slots[j].append(q)
                    used[j] |= reach[q]
                    break
            else:
                slots.append([q])
                used.append(set(reach[q]))
    slot_of = {q: j for j, slot in enumerate(slots) for q in slot}
    return pairs, slots, [slot_of[(l1, l2)] for l1, l2, _ in paths]


def _is_identity(idx: torch.Tensor) -> bool:
    return bool(torch.equal(idx, torch.arange(idx.numel())))


def _degree_index(degrees: Sequence[int]) -> torch.Tensor:
    """For each component (ascending degrees), the position of its degree in ``degrees``."""
    return torch.tensor([i for i, l in enumerate(degrees) for _ in range(2 * l + 1)], dtype=torch.long)


# --------------------------------------------------------------------------- conv


def conv_degrees_out(degrees_in: Sequence[int], degrees_edge: Sequence[int], degrees_target: Sequence[int]) -> tuple[int, ...]:
    """Target degrees a Gaunt product of the two inputs can reach (ascending)."""
    return tuple(
        sorted(
            l3
            for l3 in set(degrees_target)
            if any(gaunt_path_allowed(l1, l2, l3) for l1 in degrees_in for l2 in degrees_edge)
        )
    )


def conv_normalisation(degrees_in: Sequence[int], degrees_edge: Sequence[int], degrees_out: Sequence[int]) -> np.ndarray:
    """Per-output-degree constants ``a_l3`` (float64, one per entry of ``degrees_out``).

    ``a_l3 ** -2 = sum_{l1, l2} sum_{m1, m2} G(l1 m1, l2 m2, l3 m3) ** 2``, the same for every
    ``m3``: the variance of an output component for unit-variance inputs and weights.
    """
    out = []
    for l3 in degrees_out:
        s = sum(float((gaunt_coefficients(l1, l2, l3) ** 2).sum()) for l1 in degrees_in for l2 in degrees_edge)
        s /= 2 * l3 + 1
        if s <= 0:
            raise ValueError(f"output degree {l3} is unreachable from degrees {list(degrees_in)} x {list(degrees_edge)}")
        out.append(1.0 / math.sqrt(s))
    return np.array(out)


def mace_conv_paths(backend: str, irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps) -> list[tuple[int, int, int]]:
    """``(l1, l2, l3)`` of each output block of ``irreps_out``, which must be exactly the
    ``irreps_mid`` MACE's ``tp_out_irreps_with_instructions`` gives for these inputs (and
    the target degrees of ``irreps_out``); raises :class:`UnsupportedIrrepsError` otherwise."""
    from mace.modules.irreps_tools import tp_out_irreps_with_instructions

    irreps_in1, irreps_in2, irreps_out = o3.Irreps(irreps_in1), o3.Irreps(irreps_in2), o3.Irreps(irreps_out)
    mid, instructions = tp_out_irreps_with_instructions(irreps_in1, irreps_in2, irreps_out.simplify())
    if mid != irreps_out or len(instructions) != len(irreps_out):
        raise UnsupportedIrrepsError(
            backend,
            str(irreps_out),
            f"conv_weights='path' and 'node_path' compute MACE's own conv layout, which for {irreps_in1} x {irreps_in2} is {mid or 'empty'}",
            "Build the conv through MACE (use_backend / build_model), or use conv_weights='l2' or 'l1l2'.",
        )
    return [(irreps_in1[i].ir.l, irreps_in2[j].ir.l, mid[k].ir.l) for i, j, k, _, _ in instructions]


def path_scales(paths: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """Per-path factor ``s_p`` (float64) with e3nn's ``uvu`` path ``p`` equal to ``s_p`` times
    the Gaunt projection: ``sqrt(2 l3 + 1)`` (e3nn's component irrep normalisation, path
    normalisation ``element`` with one path per output block and edge multiplicity 1)
    over ``kappa``, where ``G(l1, l2, l3) = kappa * wigner_3j(l1, l2, l3)`` (sign included)."""
    out = []
    for l1, l2, l3 in paths:
        if not gaunt_path_allowed(l1, l2, l3):
            raise ValueError(f"path ({l1}, {l2}, {l3}) has no Gaunt product (l1 + l2 + l3 odd or triangle rule)")
        g = gaunt_coefficients(l1, l2, l3)
        w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64).numpy()
        kappa = float((g * w3j).sum() / (w3j * w3j).sum())
        if not np.allclose(g, kappa * w3j, rtol=0, atol=1e-12):  # the invariant is unique: cannot happen
            raise AssertionError(f"Gaunt and CG coefficients of path ({l1}, {l2}, {l3}) are not proportional")
        out.append(math.sqrt(2 * l3 + 1) / kappa)
    return np.array(out)


@compile_mode("script")
class SphereConv(BackendModule):
    """Gaunt convolution for MACE's ``conv`` site (see the module docstring for the math).

    Parameters
    ----------
    irreps_in1 : o3.Irreps
        Node features, natural parity, one multiplicity ``C``, each degree once.
    irreps_in2 : o3.Irreps
        Edge spherical harmonics (``1x0e + 1x1o + ...``), natural parity, multiplicity 1.
    irreps_out : o3.Irreps
        ``C x l3`` blocks for reachable natural-parity ``l3`` (see :func:`conv_degrees_out`);
        for ``conv_weights="path"`` and ``"node_path"`` MACE's ``irreps_mid`` (see :func:`mace_conv_paths`).
    engine_factory : callable
        ``EngineSpec -> engine`` (see the module docstring).
    backend_name : str
        Recorded on the module (``backend_of``).
    options : mapping
        The backend options; ``conv_weights`` (``"l2"``, ``"l1l2"``, ``"path"`` or ``"node_path"``),
        ``fused`` (bool) and ``kernel`` are read here.

    Shapes
    ------
    ``forward(x1, x2, weight, edge_index=None)``: unfused, ``x1 [E, irreps_in1.dim]``
    (gathered from senders) and the result is ``[E, irreps_out.dim]``; fused,
    ``x1 [N, irreps_in1.dim]``, ``edge_index [2, E]`` (senders, receivers) and the result
    ``[N, irreps_out.dim]`` is summed onto receivers. ``x2 [E, irreps_in2.dim]``,
    ``weight [E, weight_numel]``.
    """

    channels: int
    n_in: int
    n_edge: int
    per_l1: bool
    per_path: bool
    node_path: bool
    keep_degrees: bool
    n_paths: int
    n_pairs: int
    n_slots: int
    path_groups: List[int]
    fused: bool
    in_identity: bool
    edge_identity: bool
    out_identity: bool
    weight_numel: int
    k_in: int
    out_width: int
    kernel: str
    use_reference: Final[bool]
    use_triton: Final[bool]
    auto_triton: Final[bool]
    script_portable: Final[bool]

    def __init__(
        self,
        irreps_in1: o3.Irreps,
        irreps_in2: o3.Irreps,
        irreps_out: o3.Irreps,
        engine_factory: EngineFactory,
        backend_name: str,
        options: Mapping[str, Any],
    ) -> None:
        super().__init__(backend_name, "conv", options)
        self.irreps_in1 = o3.Irreps(irreps_in1)
        self.irreps_in2 = o3.Irreps(irreps_in2)
        self.irreps_out = o3.Irreps(irreps_out)
        be = backend_name
        for irreps, what in ((self.irreps_in1, "node features"), (self.irreps_in2, "edge attributes"), (self.irreps_out, "conv outputs")):
            require_natural_parity(be, irreps, what)
        c = require_uniform_multiplicity(be, self.irreps_in1, "node features")
        if require_uniform_multiplicity(be, self.irreps_in2, "edge attributes") != 1:
            raise UnsupportedIrrepsError(be, str(self.irreps_in2), "edge attributes must have multiplicity 1 (spherical harmonics)")
        if require_uniform_multiplicity(be, self.irreps_out, "conv outputs") != c:
            raise UnsupportedIrrepsError(be, str(self.irreps_out), f"conv outputs must have the node multiplicity {c} (channel-wise product)")
        d_in = tuple(sorted(_degrees_once(be, self.irreps_in1, "node features")))
        d_edge = tuple(sorted(_degrees_once(be, self.irreps_in2, "edge attributes")))
        mode = str(options.get("conv_weights", "l2"))
        if mode not in CONV_WEIGHTS:
            raise ValueError(f"conv_weights must be one of {CONV_WEIGHTS}, got {mode!r}")
        paths = mace_conv_paths(be, self.irreps_in1, self.irreps_in2, self.irreps_out) if mode in PER_PATH_OUTPUTS else []
        if paths:
            d_out = tuple(sorted({l3 for _, _, l3 in paths}))
        else:
            d_out = tuple(sorted(_degrees_once(be, self.irreps_out, "conv outputs")))
        unreachable = sorted(set(d_out) - set(conv_degrees_out(d_in, d_edge, d_out)))
        if unreachable:
            raise UnsupportedIrrepsError(
                be, str(self.irreps_out), f"degrees {unreachable} cannot be reached by a Gaunt product of {self.irreps_in1} and {self.irreps_in2}"
            )
        self.degrees_in, self.degrees_edge, self.degrees_out = d_in, d_edge, d_out
        self.k_in = _dim(d_in)
        self.n_paths = len(paths)
        self.channels = c
        self.n_in = len(d_in)
        self.n_edge = len(d_edge)
        self.per_l1 = mode == "l1l2"
        self.per_path = mode == "path"
        self.node_path = mode == "node_path"
        self.keep_degrees = mode in PER_PATH_OUTPUTS
        self.fused = bool(options.get("fused", True))
        kernel = str(options.get("kernel", "auto"))
        if kernel not in CONV_KERNELS:
            raise BackendOptionError(f"TP backend {be!r}: option 'kernel' must be one of {list(CONV_KERNELS)}, got {kernel!r}")
        if kernel == "triton":
            why = triton_unavailable_reason()
            if why is not None:
                raise BackendOptionError(f"TP backend {be!r}: kernel='triton' cannot run here: {why}. Use kernel='torch' or 'auto'.")
        self.kernel = kernel
        self.use_reference = kernel == "reference"
        self.use_triton = kernel == "triton"
        self.auto_triton = _auto_takes_triton(kernel)
        self.script_portable = True
        self.n_pairs = len({(l1, l2) for l1, l2, _ in paths}) if self.node_path else 0
        if self.per_path:
            self.weight_numel = c * self.n_paths
        elif self.node_path:
            self.weight_numel = c * self.n_pairs
        else:
            self.weight_numel = c * self.n_edge * (self.n_in if self.per_l1 else 1)

        self.spec = EngineSpec(d_in, d_edge, d_out, max(d_in) + max(d_edge))
        self.engine = engine_factory(self.spec)
        dtype = torch.get_default_dtype()
        self._register_path_tables(paths, d_in, d_edge)
        slot_of_path = self._register_slot_tables(paths, d_in, d_edge)
        self.out_width = c * max(1, self.n_slots if self.node_path else self.n_paths) * _dim(d_out)
        if self.node_path:
            scales = path_scales(paths)
            per_component = torch.zeros(self.n_slots, _dim(d_out), dtype=torch.float64)  # [n_slots, K_out]
            offs = _offsets(d_out)
            for p, (_, _, l3) in enumerate(paths):  # each (slot, l3) holds at most one path
                per_component[slot_of_path[p], offs[l3] : offs[l3] + 2 * l3 + 1] = float(scales[p])
            idx_out = _paths_to_mul_ir(paths, slot_of_path, c, d_out, self.n_slots)
        elif self.per_path:
            order = self.path_order.tolist()
            scales = torch.from_numpy(path_scales(paths))[order]
            per_component = scales[:, None].expand(self.n_paths, _dim(d_out))  # [n_paths, K_out], the conv's path order
            idx_out = _paths_to_mul_ir(paths, [order.index(j) for j in range(len(paths))], c, d_out)
        else:
            per_component = torch.from_numpy(conv_normalisation(d_in, d_edge, d_out))[_degree_index(d_out)]  # [K_out]
            idx_out = _channels_to_mul_ir(self.irreps_out, d_out)
        self.register_buffer("out_norm", per_component.contiguous().to(dtype))
        idx_in = _mul_ir_to_channels(self.irreps_in1, d_in)
        self.in_identity = _is_identity(idx_in)
        self.out_identity = _is_identity(idx_out)
        self.register_buffer("idx_in", idx_in)
        self.register_buffer("idx_out", idx_out)
        # x2 may list degrees in any order; the engine wants them ascending.
        idx_edge = _mul_ir_to_channels(self.irreps_in2, d_edge)
        self.edge_identity = _is_identity(idx_edge)
        self.register_buffer("idx_edge", idx_edge)

    def _register_path_tables(self, paths: Sequence[tuple[int, int, int]], d_in: Sequence[int], d_edge: Sequence[int]) -> None:
        """In the conv's path order (:func:`_paths_by_edge_degree`): ``path_order [n_paths]``
        (MACE's index of each path), ``path_l1 [n_paths]`` (position of its ``l1`` among the
        input degrees) and ``path_groups`` (paths per edge degree). Empty unless ``path``,
        but always present, so that TorchScript compiles every branch; not in the state
        dict (they follow from the irreps), so state dicts and safe files written before
        ``path`` existed still load strictly."""
        order, groups = _paths_by_edge_degree(paths, d_edge)
        self.register_buffer("path_order", torch.tensor(order, dtype=torch.long), persistent=False)
        self.register_buffer("path_l1", torch.tensor([list(d_in).index(paths[j][0]) for j in order], dtype=torch.long), persistent=False)
        self.path_groups = groups if paths else []

    def _register_slot_tables(self, paths: Sequence[tuple[int, int, int]], d_in: Sequence[int], d_edge: Sequence[int]) -> list[int]:
        """``conv_weights="node_path"`` (:func:`node_path_slots`): ``slot_l1 [n_slots]``
        (position of each slot's ``l1`` among the input degrees) and ``slot_weights
        [n_slots * n_edge]`` (for each slot and edge degree, the column of the pair in the
        weights, or ``n_pairs``, a zero column, when the slot lacks that pair). Empty unless
        ``node_path``, always present, not in the state dict (as the path tables). Returns
        the slot of each path."""
        if not self.node_path:
            self.n_slots = 0
            self.register_buffer("slot_l1", torch.zeros(0, dtype=torch.long), persistent=False)
            self.register_buffer("slot_weights", torch.zeros(0, dtype=torch.long), persistent=False)
            return []
        pairs, slots, slot_of_path = node_path_slots(paths, d_in, d_edge)
        self.n_slots = len(slots)
        l1_of = [list(d_in).index(slot[0][0]) for slot in slots]
        columns = [pairs.index((slot[0][0], l2)) if (slot[0][0], l2) in slot else len(pairs) for slot in slots for l2 in d_edge]
        self.register_buffer("slot_l1", torch.tensor(l1_of, dtype=torch.long), persistent=False)
        self.register_buffer("slot_weights", torch.tensor(columns, dtype=torch.long), persistent=False)
        return slot_of_path

    def __setstate__(self, state: dict) -> None:
        # models saved before the ``kernel`` option: the default kernel, portable TorchScript;
        # before ``path``: no path tables; before ``node_path``: no slot tables
        super().__setstate__(state)
        self.__dict__.setdefault("kernel", "auto")
        self.__dict__.setdefault("use_reference", False)
        self.__dict__.setdefault("use_triton", False)
        # what ``auto`` takes is decided by this version of the plugin, not by the pickle
        self.__dict__["auto_triton"] = _auto_takes_triton(self.__dict__["kernel"])
        self.__dict__.setdefault("script_portable", True)
        self.__dict__.setdefault("per_path", False)
        self.__dict__.setdefault("n_paths", 0)
        self.__dict__.setdefault("node_path", False)
        self.__dict__.setdefault("keep_degrees", self.per_path)
        self.__dict__.setdefault("n_pairs", 0)
        if "slot_l1" not in self._buffers:
            self._register_slot_tables([], self.degrees_in, self.degrees_edge)
            self.slot_l1 = self.slot_l1.to(self.out_norm.device)
            self.slot_weights = self.slot_weights.to(self.out_norm.device)
        if "path_l1" not in self._buffers:
            self._register_path_tables([], self.degrees_in, self.degrees_edge)
            self.path_order = self.path_order.to(self.out_norm.device)
            self.path_l1 = self.path_l1.to(self.out_norm.device)
        _set_widths(self)

    def conv_weights(self) -> str:
        """The ``conv_weights`` mode: ``"l2"``, ``"l1l2"``, ``"path"`` or ``"node_path"``."""
        if self.node_path:
            return "node_path"
        return "path" if self.per_path else ("l1l2" if self.per_l1 else "l2")

    def kernel_in_use(self) -> str:
        """The kernel eager calls run now (``auto`` resolved for the module's device)."""
        if self.use_reference:
            return "reference"
        if self.use_triton or (self.auto_triton and self.out_norm.is_cuda):
            return "triton"
        return "torch"

    def extra_repr(self) -> str:
        script = "reference" if (self.use_reference or self.script_portable) else self.kernel_in_use()
        paths = f" ({self.n_paths} paths)" if self.per_path else ""
        if self.node_path:
            paths = f" ({self.n_paths} paths, {self.n_pairs} degree pairs in {self.n_slots} receiver slots)"
        return (
            f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, conv_weights={self.conv_weights()}{paths}, fused={self.fused}, "
            f"kernel={self.kernel} (runs {self.kernel_in_use()}; TorchScript: {script}), points={self.engine.num_points}"
        )

    def _points_conv(self, f: torch.Tensor, w: torch.Tensor, s: torch.Tensor, edge_index: Optional[torch.Tensor]) -> torch.Tensor:
        # Both conditions are constants for TorchScript, so a scripted module holds one branch
        # only: the portable one (plain aten ops) unless use_primitives_in_torchscript was called.
        # ``path`` keeps the degree axis (one product per path) up to the projection.
        if self.use_reference or (torch.jit.is_scripting() and self.script_portable):
            return reference_conv(f, w, s, edge_index, self.keep_degrees)
        if self.use_triton or (self.auto_triton and f.is_cuda):
            return triton_conv(f, w, s, edge_index, self.keep_degrees)
        return primitive_conv(f, w, s, edge_index, self.keep_degrees)

    def _path_conv(self, feats: torch.Tensor, weight: torch.Tensor, edge_fn: torch.Tensor, edge_index: Optional[torch.Tensor]) -> torch.Tensor:
        """``conv_weights="path"`` on the points: one product per (channel, path), kept per
        path to the receivers. Paths are grouped by ``l2`` so each group is one call with a
        single edge slice (``K = 1``: no multiply-adds with zero weights)."""
        c = self.channels
        f = self.engine.to_points_split(feats).index_select(2, self.path_l1)  # [n, C, n_paths, P]: f_l1 per path
        w = weight.reshape(edge_fn.shape[0], self.n_paths, c).index_select(1, self.path_order)
        w = w.transpose(1, 2).unsqueeze(3)  # [E, C, n_paths, 1], the conv's path order
        parts: list[torch.Tensor] = []
        start = 0
        for k, size in enumerate(self.path_groups):
            if size > 0:
                stop = start + size
                f_k, w_k = f[:, :, start:stop].contiguous(), w[:, :, start:stop].contiguous()
                parts.append(self._points_conv(f_k, w_k, edge_fn[:, k : k + 1].contiguous(), edge_index))
                start = stop
        return torch.cat(parts, dim=2)

    def _node_path_conv(self, feats: torch.Tensor, weight: torch.Tensor, edge_fn: torch.Tensor, edge_index: Optional[torch.Tensor]) -> torch.Tensor:
        """``conv_weights="node_path"`` on the points: per edge, each slot's pairs weighted by
        their ``l1l2`` weights (one product per slot and channel), kept per slot to the
        receivers, where each slot is projected onto every ``l3`` (one path each)."""
        c, e = self.channels, edge_fn.shape[0]
        f = self.engine.to_points_split(feats).index_select(2, self.slot_l1)  # [n, C, n_slots, P]
        w = torch.cat([weight.reshape(e, c, self.n_pairs), weight.new_zeros((e, c, 1))], dim=2)
        w = w.index_select(2, self.slot_weights).reshape(e, c, self.n_slots, self.n_edge)  # [E, C, n_slots, n_edge]
        return self._points_conv(f, w, edge_fn, edge_index)  # [rows, C, n_slots, P]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, edge_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        n = x1.shape[0]
        c = self.channels
        if not self.in_identity:
            x1 = x1.index_select(1, self.idx_in)
        feats = x1.reshape(n, c, self.k_in)  # [n, C, K_in] (widths named: n may be 0)
        if not self.edge_identity:
            x2 = x2.index_select(1, self.idx_edge)
        edge_fn = self.engine.edge_points(x2)  # S [E, n_edge, P]
        e = edge_fn.shape[0]
        if self.per_path:
            z = self._path_conv(feats, weight, edge_fn, edge_index)  # [rows, C, n_paths, P]
        elif self.node_path:
            z = self._node_path_conv(feats, weight, edge_fn, edge_index)  # [rows, C, n_slots, P]
        else:
            if self.per_l1:
                f = self.engine.to_points_split(feats)  # F [n, C, n_in, P]
                w = weight.reshape(e, c, self.n_in, self.n_edge)
            else:
                f = self.engine.to_points(feats).unsqueeze(2)  # F [n, C, 1, P]
                w = weight.reshape(e, c, 1, self.n_edge)
            z = self._points_conv(f, w, edge_fn, edge_index)  # [rows, C, P]
        out = self.engine.from_points(z) * self.out_norm  # [rows, C, K_out] ([rows, C, n_paths or n_slots, K_out] for path, node_path)
        out = out.reshape(out.shape[0], self.out_width)
        if not self.out_identity:
            out = out.index_select(1, self.idx_out)
        return out


def use_primitives_in_torchscript(model: torch.nn.Module, enable: bool = True) -> int:
    """Choose what TorchScript compiles for every :class:`SphereConv` in ``model`` (in place).

    By default (``enable=False``) a scripted conv holds the ``reference`` formulation (plain
    aten ops), so ``*_compiled.model`` and MACE's libtorch LAMMPS export load in any
    process, pure libtorch included. With ``enable=True`` it calls the ``torch.ops.mace_gaunt``
    primitives, like eager (the memory savings in TorchScript too), and the file then loads
    only in a Python process that imported ``mace_gaunt_plugin`` (e.g. our ML-IAP wrapper).
    Convs built with ``kernel=reference`` always script the reference. Call it before
    scripting; eager results are unchanged. Returns the number of convs set.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, SphereConv):
            module.script_portable = not enable
            count += 1
    return count


# --------------------------------------------------------------------------- product


def _gaussian_power_moment(nu: int, var: float, cov: np.ndarray) -> np.ndarray:
    """``E[X**nu Y**nu]`` for zero-mean jointly Gaussian ``X, Y`` with variance ``var`` and
    covariance ``cov`` (Isserlis / Wick)."""
    total = np.zeros_like(cov)
    for j in range(nu % 2, nu + 1, 2):
        k = (nu - j) // 2
        coef = math.factorial(nu) ** 2 / (math.factorial(j) * math.factorial(k) ** 2 * 2 ** (2 * k))
        total = total + coef * var ** (2 * k) * cov**j
    return total


def power_projection_rms(degrees_in: Sequence[int], correlation: int, degrees_out: Sequence[int]) -> np.ndarray:
    """RMS of ``Proj_{LM}(f**nu)`` for ``f = sum A_lm Y_lm`` with ``A_lm ~ N(0, 1)``, shape
    ``[correlation, len(degrees_out)]`` (float64, exact).

    ``f`` is a Gaussian field with covariance ``k(t) = sum_l (2l+1)/(4 pi) P_l(t)``; by
    Isserlis ``E[f(p)**nu f(q)**nu]`` is a polynomial ``g_nu`` of ``t = p.q``, and by
    Funk-Hecke ``E[Proj_LM(f**nu)**2] = 2 pi integral_{-1}^{1} g_nu(t) P_L(t) dt``, which
    Gauss-Legendre quadrature of enough nodes gives exactly. Degrees that ``f**nu`` cannot
    reach (selection rules) get exactly 0.
    """
    from numpy.polynomial import legendre

    lmax = max(degrees_in)
    n = (2 * correlation * lmax + max(degrees_out)) // 2 + 2
    t, w = legendre.leggauss(n)
    k = sum((2 * l + 1) / (4 * math.pi) * legendre.legval(t, [0] * l + [1]) for l in degrees_in)
    var = sum((2 * l + 1) / (4 * math.pi) for l in degrees_in)
    out = np.zeros((correlation, len(degrees_out)))
    reach = set(degrees_in)  # degrees f**nu can have; outside them the projection is exactly 0
    for i, nu in enumerate(range(1, correlation + 1)):
        if nu > 1:
            reach = {l3 for l1 in reach for l2 in degrees_in for l3 in range(abs(l1 - l2), l1 + l2 + 1) if gaunt_path_allowed(l1, l2, l3)}
        g = _gaussian_power_moment(nu, var, k)
        for j, big_l in enumerate(degrees_out):
            if big_l not in reach:
                continue
            out[i, j] = math.sqrt(2 * math.pi * float(np.sum(w * g * legendre.legval(t, [0] * big_l + [1]))))
    return out


def factor_count(correlation: int, rank: int = 1) -> int:
    """Number of reweighted factors of ``product_basis="factors"`` (``rank`` 1) and ``"cp"``:
    ``rank * nu`` for each order ``nu = 2 .. correlation`` (the first order needs none: its
    projection weights already weigh every degree)."""
    return rank * sum(range(2, correlation + 1))


def product_terms(correlation: int, rank: int = 1) -> int:
    """Number of projected products of the product site: one for ``nu = 1``, ``rank`` for
    each ``nu = 2 .. correlation`` (``power`` and ``factors``: ``correlation``)."""
    return 1 + rank * (correlation - 1)


#: Spread of the initial ``cp`` factor weights: ``r = (1 + s z) / sqrt(1 + s**2)``, ``z ~ N(0, 1)``
#: (mean square 1, so each factor keeps the variance of ``f``; distinct, so the factors of a
#: term do not stay equal under training, as exactly equal ones would by symmetry).
CP_INIT_SPREAD = 0.5


@compile_mode("script")
class SphereProduct(BackendModule):
    """Luo et al.'s MACE-Gaunt many-body basis for MACE's ``product`` site.

    Option ``product_basis``:

    ``"power"`` (default; Luo et al.)
        ``B_nu,L = Proj_L(f**nu)`` of one function per channel, ``f = sum_l A_l``, weighed
        by ``w[element, channel, nu, L]``.
    ``"cp"`` (``product_rank`` R)
        a CP-rank-R symmetric contraction (DESIGN.md 9.2): for ``nu >= 2``, ``B_nu,L =
        sum_r w[element, channel, nu, r, L] Proj_L(g_nu,r,1 ... g_nu,r,nu)``, each factor
        its own per-element, per-channel, per-degree reweighting of ``A`` as in
        ``factors`` (:func:`factor_count` ``(correlation, R)`` factors, :func:`product_terms`
        projected products). For ``nu = 2`` the coupling of degrees ``(l1, l2)`` into ``L``
        is ``sum_r w_r,L (a_r,l1 b_r,l2 + a_r,l2 b_r,l1)``, rank up to ``2 R`` per output
        degree. ``R = 1`` is ``factors``' function class. The factor weights start at
        ``(1 + 0.5 z) / sqrt(1.25)`` (``z ~ N(0, 1)``, :data:`CP_INIT_SPREAD`): distinct, mean
        square 1; the projection weights start ``N(0, 1) / sqrt(n_terms)``.
    ``"factors"``
        ``B_nu,L = Proj_L(g_nu,1 ... g_nu,nu)`` for ``nu >= 2``, each factor its own
        reweighting of ``A``, ``g_nu,k = sum_l r[element, nu, k, channel, l] A_l``
        (:func:`factor_count` factors per channel and element). Where ``f**2`` fixes how
        the degree pairs ``(l1, l2)`` of ``A`` couple, ``g_1 g_2`` weighs them by
        ``r_1,l1 r_2,l2 + r_1,l2 r_2,l1``: couplings of MACE's symmetric contraction that a
        single power cannot weigh, at the same pointwise-product cost class (one
        evaluation on the points per factor instead of one in all). Each ``r`` is a
        per-degree scalar, so the basis stays O(3)-exact. All ``r`` start at 1: a fresh
        ``factors`` product computes what ``power`` computes. (Equal factors of a term get
        equal gradients, so training keeps them equal: ``factors`` then learns
        ``Proj_L(g_nu**nu)`` of one reweighted ``g_nu`` per order; ``cp`` starts them
        apart.)

    Parameters
    ----------
    irreps_in : o3.Irreps
        ``A`` (MACE's interaction output): natural parity, one multiplicity ``C``, degrees
        ascending, each once.
    irreps_out : o3.Irreps
        Natural parity, multiplicity ``C``, each degree once.
    correlation : int
        Highest power ``nu``.
    num_elements : int
        Number of chemical elements (rows of ``node_attrs``).
    engine_factory, backend_name, options
        As for :class:`SphereConv`.

    Shapes
    ------
    ``forward(node_feats [N, C, K_in], node_attrs [N, num_elements]) -> [N, irreps_out.dim]``
    (e3nn ``mul_ir`` layout).
    """

    channels: int
    correlation: int
    num_elements: int
    n_out: int
    out_width: int
    out_identity: bool
    n_factors: int
    n_in: int
    k_in: int
    rank: int
    n_terms: int

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        correlation: int,
        num_elements: int,
        engine_factory: EngineFactory,
        backend_name: str,
        options: Mapping[str, Any],
    ) -> None:
        super().__init__(backend_name, "product", options)
        be = backend_name
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        require_natural_parity(be, self.irreps_in, "product inputs")
        require_natural_parity(be, self.irreps_out, "product outputs")
        c = require_uniform_multiplicity(be, self.irreps_in, "product inputs")
        if require_uniform_multiplicity(be, self.irreps_out, "product outputs") != c:
            raise UnsupportedIrrepsError(be, str(self.irreps_out), f"product outputs must have the input multiplicity {c} (channel-wise product)")
        d_in = _degrees_once(be, self.irreps_in, "product inputs")
        if list(d_in) != sorted(d_in):
            raise UnsupportedIrrepsError(be, str(self.irreps_in), "product inputs must be sorted by degree", "Sort the irreps (as MACE does).")
        d_out = tuple(sorted(_degrees_once(be, self.irreps_out, "product outputs")))
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        if num_elements is None or int(num_elements) < 1:
            raise ValueError(f"num_elements must be >= 1, got {num_elements!r}")
        reach = correlation * max(d_in)
        if max(d_out) > reach or (max(d_in) == 0 and max(d_out) > 0):
            raise UnsupportedIrrepsError(
                be, str(self.irreps_out), f"degrees above {reach if max(d_in) else 0} are unreachable from powers up to {correlation} of {self.irreps_in}"
            )
        self.degrees_in, self.degrees_out = d_in, d_out
        self.channels = c
        self.out_width = c * _dim(d_out)
        self.correlation = int(correlation)
        self.num_elements = int(num_elements)
        self.n_out = len(d_out)
        self.spec = EngineSpec(d_in, (), d_out, self.correlation * max(d_in))
        self.engine = engine_factory(self.spec)
        dtype = torch.get_default_dtype()
        rms = power_projection_rms(d_in, self.correlation, d_out)  # [nu, n_out]
        # A power whose projection vanishes identically (e.g. f**1 onto a degree f lacks) gets 0.
        inv = np.where(rms > 0, 1.0 / np.where(rms > 0, rms, 1.0), 0.0)
        per_component = torch.from_numpy(inv)[:, _degree_index(d_out)]  # [nu, K_out]
        self.register_buffer("degree_index", _degree_index(d_out))
        idx_out = _channels_to_mul_ir(self.irreps_out, d_out)
        self.out_identity = _is_identity(idx_out)
        self.register_buffer("idx_out", idx_out)
        basis = str(options.get("product_basis", "power"))
        if basis not in PRODUCT_BASES:
            raise BackendOptionError(f"product_basis must be one of {PRODUCT_BASES}, got {basis!r}")
        rank = int(options.get("product_rank", 1)) if basis == "cp" else 1
        if rank < 1:
            raise BackendOptionError(f"product_rank must be >= 1, got {rank}")
        self.product_basis = basis
        self.rank = rank
        self.n_terms = product_terms(self.correlation, rank)
        # projected products: nu = 1, then ``rank`` per nu >= 2 (their nu: rows of power_norm)
        term_nu = [0] + [nu - 1 for nu in range(2, self.correlation + 1) for _ in range(rank)]
        self.register_buffer("power_norm", per_component[term_nu].to(dtype))
        self.weights = torch.nn.Parameter(torch.randn(self.num_elements, c, self.n_terms, self.n_out, dtype=dtype) / math.sqrt(self.n_terms))
        self.n_in = len(d_in)
        self.k_in = _dim(d_in)
        self.n_factors = factor_count(self.correlation, rank) if basis in ("factors", "cp") else 0
        self.register_buffer("in_degree_index", _degree_index(d_in))
        # None for the power basis: its state dict stays that of models made before the option
        init = torch.ones(self.num_elements, self.n_factors, c, self.n_in, dtype=dtype)
        if basis == "cp":
            init = (1 + CP_INIT_SPREAD * torch.randn_like(init)) / math.sqrt(1 + CP_INIT_SPREAD**2)
        self.register_parameter("factor_weights", torch.nn.Parameter(init) if self.n_factors else None)

    def __setstate__(self, state: dict) -> None:
        # models saved before ``product_basis``: the power basis (no factor weights)
        super().__setstate__(state)
        if "product_basis" not in self.__dict__:
            self.product_basis = "power"
            self.n_factors = 0
            self.n_in = len(self.degrees_in)
            self.k_in = _dim(self.degrees_in)
            self.register_buffer("in_degree_index", _degree_index(self.degrees_in).to(self.weights.device))
            self.register_parameter("factor_weights", None)
        if "rank" not in self.__dict__:  # before ``cp``: one term per nu
            self.rank = 1
            self.n_terms = self.correlation
        _set_widths(self)

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, product_basis={self.product_basis}, "
            + (f"product_rank={self.rank}, " if self.product_basis == "cp" else "")
            + f"points={self.engine.num_points}"
        )

    def _factor_points(self, node_feats: torch.Tensor, node_attrs: torch.Tensor, factor_weights: torch.Tensor) -> torch.Tensor:
        """The reweighted factors on the points, ``[N, n_factors, C, P]``."""
        n = node_feats.shape[0]
        r = (node_attrs @ factor_weights.reshape(self.num_elements, -1)).reshape(n, self.n_factors, self.channels, self.n_in)
        a = node_feats.reshape(n, 1, self.channels, self.k_in) * r.index_select(3, self.in_degree_index)
        g = self.engine.to_points(a.reshape(n * self.n_factors, self.channels, self.k_in))
        return g.reshape(n, self.n_factors, self.channels, g.shape[-1])

    def forward(self, node_feats: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        n = node_feats.shape[0]
        c = self.channels
        f = self.engine.to_points(node_feats)  # [N, C, P]
        powers = [f]
        factor_weights = self.factor_weights
        if factor_weights is None:  # power basis: f, f**2, ...
            g = f
            for _ in range(self.correlation - 1):
                g = g * f
                powers.append(g)
        else:  # factors / cp: per nu, ``rank`` products g_nu,r,1 ... g_nu,r,nu (factor order: nu, r, k)
            factors = self._factor_points(node_feats, node_attrs, factor_weights)  # [N, n_factors, C, P]
            first = 0
            for nu in range(2, self.correlation + 1):
                block = factors[:, first : first + self.rank * nu].reshape(n, self.rank, nu, c, factors.shape[-1])
                g = block[:, :, 0]
                for k in range(1, nu):
                    g = g * block[:, :, k]  # [N, R, C, P]
                powers.extend(g.unbind(1))
                first += self.rank * nu
        proj = self.engine.from_points(torch.stack(powers, dim=2))  # [N, C, n_terms, K_out]
        w = (node_attrs @ self.weights.reshape(self.num_elements, -1)).reshape(n, c, self.n_terms, self.n_out)
        w = w.index_select(3, self.degree_index) * self.power_norm  # [N, C, n_terms, K_out]
        out = (proj * w).sum(2).reshape(n, self.out_width)
        if not self.out_identity:
            out = out.index_select(1, self.idx_out)
        return out
