"""Modules of the ``sparse`` backend: MACE's Clebsch-Gordan conv with one learnable gate
per path, and its compact frozen form.

A *path* is one instruction of MACE's ``uvu`` tensor product (input irrep of the node
features x edge spherical harmonic -> output irrep). Every output slot of MACE's
``irreps_mid`` receives exactly one path, so dropping a path leaves exact zeros in its
slot and changes nothing else; any subset of paths is exactly O(3)-equivariant.

:class:`SparseCGConv` is the training form: all paths, a gate vector and a path mask.
:class:`CompactCGConv` holds only the kept paths and expects only their radial weights;
``sparse_backend.compact`` swaps one for the other and shrinks the radial MLP.
"""

import math
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import torch
from e3nn import o3
from e3nn.util.jit import compile_mode

from ..errors import UnsupportedIrrepsError
from .base import BackendModule

__all__ = ["SparseCGConv", "CompactCGConv", "n_kept", "subset_keys", "subset_tensor_product"]


Path = Tuple[int, int, int]


def n_kept(n_paths: int, sparsity: float) -> int:
    """Number of paths kept at sparsity ``s``: ``ceil((1 - s) * n_paths)``, at least 1.

    >>> n_kept(10, 0.3), n_kept(10, 0.7), n_kept(4, 0.7)
    (7, 3, 2)
    """
    return max(1, math.ceil((1.0 - sparsity) * n_paths - 1e-9))


# The hash keeps every value in [0, 2**31 = 2147483648) and multiplies by numbers under
# 2**31, so int64 never overflows (literals, not globals: TorchScript).


def _mix(x: torch.Tensor) -> torch.Tensor:
    """Three rounds of LCG + xorshift on int64 values in [0, 2**31)."""
    for _ in range(3):
        x = torch.remainder(x * 1103515245 + 12345, 2147483648)
        x = torch.bitwise_xor(x, torch.bitwise_right_shift(x, 16))
    return x


def subset_keys(seed: int, salt: int, step: torch.Tensor, n: int) -> torch.Tensor:
    """Pseudo-random int64 keys ``[n]`` for training step ``step`` (a 0-d int64 tensor).

    A counter-based hash instead of a ``torch.Generator``: it is TorchScript-able, works on
    any device, consumes no global RNG, is identical on every DDP rank, and resumes exactly
    from the ``step`` buffer saved in a checkpoint. The ``n_keep`` smallest keys are kept.
    """
    base = (seed * 1000003 + salt * 999983) % 2147483648
    h = _mix(torch.remainder(step + base, 2147483648))
    idx = torch.arange(n, dtype=torch.int64, device=step.device)
    return _mix(torch.remainder(h + idx * 40503 + 7, 2147483648))


def subset_tensor_product(tp: o3.TensorProduct, keep: Sequence[int], drop_empty_outputs: bool = False) -> Tuple[o3.TensorProduct, List[int]]:
    """An e3nn ``TensorProduct`` holding only instructions ``keep`` (indices into
    ``tp.instructions``), with exactly ``tp``'s path coefficients.

    Parameters
    ----------
    tp : e3nn.o3.TensorProduct
        The full product.
    keep : sequence of int
        Instructions to keep, in ``tp``'s order.
    drop_empty_outputs : bool
        ``False``: same ``irreps_out``, zeros in the slots no kept path writes.
        ``True``: ``irreps_out`` holds only the slots kept paths write (in order).

    Returns
    -------
    (e3nn.o3.TensorProduct, list of int)
        The product, and for each of its output slots the slot of ``tp`` it is.

    e3nn normalizes a path by the paths sharing its output slot; MACE's layout has one
    path per slot, so the default normalization reproduces ``tp``'s coefficients bit for
    bit. For other layouts they are passed explicitly (equal up to rounding).
    """
    instr = [tp.instructions[i] for i in keep]
    slots = sorted({ins.i_out for ins in instr}) if drop_empty_outputs else list(range(len(tp.irreps_out)))
    new_slot = {old: new for new, old in enumerate(slots)}
    irreps_out = o3.Irreps([tp.irreps_out[j] for j in slots])
    plain = [(ins.i_in1, ins.i_in2, new_slot[ins.i_out], ins.connection_mode, ins.has_weight) for ins in instr]
    kwargs: dict[str, Any] = dict(shared_weights=False, internal_weights=False)
    out = o3.TensorProduct(tp.irreps_in1, tp.irreps_in2, irreps_out, plain, **kwargs)
    if any(a.path_weight != b.path_weight for a, b in zip(out.instructions, instr)):
        explicit = [p + (ins.path_weight**2,) for p, ins in zip(plain, instr)]
        out = o3.TensorProduct(
            tp.irreps_in1, tp.irreps_in2, irreps_out, explicit,
            irrep_normalization="none", path_normalization="none", **kwargs,
        )  # fmt: skip
    return out, slots


def _path_label(tp: o3.TensorProduct, i: int) -> Path:
    ins = tp.instructions[i]
    return (tp.irreps_in1[ins.i_in1].ir.l, tp.irreps_in2[ins.i_in2].ir.l, tp.irreps_out[ins.i_out].ir.l)


def _weight_layout(tp: o3.TensorProduct) -> Tuple[List[int], List[int]]:
    """(offset, numel) of each instruction's slice of the flat per-edge weight vector."""
    offsets, sizes, pos = [], [], 0
    for ins in tp.instructions:
        size = math.prod(ins.path_shape) if ins.has_weight else 0
        offsets.append(pos)
        sizes.append(size)
        pos += size
    return offsets, sizes


@compile_mode("script")
class SparseCGConv(BackendModule):
    r"""MACE's conv tensor product with one learnable gate :math:`g_p` per path :math:`p`.

    .. math:: m_{ij} = \sum_p g_p\, \mathrm{mask}_p\, \mathrm{CG}_p(x_j, Y(r_{ij}); w_p(r_{ij}))

    Implemented by scaling each path's radial weights (the product is linear in them), so
    with all gates 1 and the full mask it is e3nn's ``TensorProduct`` bit for bit.

    Phases (buffer ``phase``, set by ``sparse_backend.on_epoch_start``):
    0 built, all paths; 1 a fresh random subset of ``n_keep`` paths every training step;
    2 the ``n_keep`` paths of largest ``|g_p|`` every training step; 3 frozen: the path
    set and gate values are fixed and only the kept paths are computed.

    A forward is a *training step* when the module is in train mode, grad mode is on and
    the gates require grad. MACE's ``evaluate`` and calculator switch ``requires_grad`` off,
    so evaluation never changes the path set (it uses the ``mask`` buffer).

    Parameters
    ----------
    irreps_in1, irreps_in2, irreps_out : e3nn.o3.Irreps
        Node features, edge spherical harmonics, MACE's ``irreps_mid``.
    instructions : list
        MACE's ``uvu`` instructions (from ``tp_out_irreps_with_instructions``).
    options : mapping
        Resolved backend options (``sparsity``, ``random_epochs``, ``gated_epochs``, ``seed``).
    """

    fused: bool
    n_paths: int
    n_keep: int
    seed: int
    salt: int
    phase_now: int
    weight_numel: int
    paths: List[Tuple[int, int, int]]

    def __init__(
        self,
        irreps_in1: o3.Irreps,
        irreps_in2: o3.Irreps,
        irreps_out: o3.Irreps,
        instructions: Sequence[tuple],
        options: Mapping[str, Any],
    ) -> None:
        super().__init__("sparse", "conv", options)
        unweighted = [tuple(ins) for ins in instructions if len(ins) > 4 and not ins[4]]
        if unweighted:
            raise UnsupportedIrrepsError(
                "sparse", f"{irreps_in1} x {irreps_in2}",
                f"the conv instructions {unweighted} have no per-edge weights, which is where the path gates act",
                "The 'sparse' backend gates MACE's conv, whose instructions are all weighted ('uvu', True).",
            )  # fmt: skip
        # No random numbers drawn here: the radial MLP built next by MACE gets the same
        # initial weights as with the stock tensor product.
        self.tp = o3.TensorProduct(irreps_in1, irreps_in2, irreps_out, list(instructions), shared_weights=False, internal_weights=False)
        self.irreps_in1 = self.tp.irreps_in1
        self.irreps_in2 = self.tp.irreps_in2
        self.irreps_out = self.tp.irreps_out
        self.weight_numel = int(self.tp.weight_numel)
        self.fused = False
        self.n_paths = len(self.tp.instructions)
        self.n_keep = n_kept(self.n_paths, float(options["sparsity"]))
        self.seed = int(options["seed"])
        self.salt = 0  # layer index, set by the epoch hook so layers draw different subsets
        self.paths = [_path_label(self.tp, i) for i in range(self.n_paths)]
        offsets, sizes = _weight_layout(self.tp)
        self._offsets, self._sizes = offsets, sizes
        weight_path = [i for i, size in enumerate(sizes) for _ in range(size)]

        self.gates = torch.nn.Parameter(torch.ones(self.n_paths))
        self.register_buffer("phase", torch.zeros((), dtype=torch.int64))
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("mask", torch.ones(self.n_paths, dtype=torch.bool))
        self.register_buffer("frozen_gates", torch.ones(self.n_paths))
        # Derived from the instructions and the state above: not saved.
        self.register_buffer("weight_path", torch.tensor(weight_path, dtype=torch.int64), persistent=False)
        self.phase_now = 0
        self._kept_is_subset = True  # so that _reset_kept builds the first tp_kept
        self._reset_kept()

    # ------------------------------------------------------------------ state changes
    def _reset_kept(self) -> None:
        """Phase < 3: the 'kept' computation is the full product. ``tp_kept`` is a second
        product of all paths, not ``tp`` itself (e3nn's compile skips a child registered
        twice) and not a deepcopy (which needs TorchScript: the aotinductor export builds
        models with it off)."""
        if not self._kept_is_subset:
            return
        self.tp_kept = self._product_of(range(self.n_paths))
        device = self.mask.device
        self.register_buffer("kept_cols", torch.arange(self.weight_numel, dtype=torch.int64, device=device), persistent=False)
        self.register_buffer("kept_scale", torch.ones(self.weight_numel, dtype=self.gates.dtype, device=device), persistent=False)
        self._kept_is_subset = False

    def _build_kept(self) -> None:
        """Phase 3: a tensor product of the paths in ``mask`` and the columns of their weights."""
        keep = [i for i in range(self.n_paths) if bool(self.mask[i])]
        self.tp_kept = self._product_of(keep)
        cols = [c for i in keep for c in range(self._offsets[i], self._offsets[i] + self._sizes[i])]
        kept_cols = torch.tensor(cols, dtype=torch.int64, device=self.mask.device)
        kept_scale = self.frozen_gates.index_select(0, self.weight_path.index_select(0, kept_cols))
        self.register_buffer("kept_cols", kept_cols, persistent=False)
        self.register_buffer("kept_scale", kept_scale.detach().clone(), persistent=False)
        self._kept_is_subset = True

    def _product_of(self, keep: Sequence[int]) -> o3.TensorProduct:
        """A tensor product of the paths ``keep`` of ``tp``, in the gates' dtype and device."""
        old = torch.get_default_dtype()
        torch.set_default_dtype(self.gates.dtype)  # e3nn computes its coefficients in the default dtype
        try:
            tp, _ = subset_tensor_product(self.tp, list(keep))
        finally:
            torch.set_default_dtype(old)
        return tp.to(device=self.mask.device)

    def top_mask(self) -> torch.Tensor:
        """The ``n_keep`` paths of largest ``|gate|`` (ties: lower index first)."""
        order = torch.argsort(-self.gates.detach().abs(), stable=True)
        return torch.zeros_like(self.mask).index_fill_(0, order[: self.n_keep], True)

    def random_mask(self) -> torch.Tensor:
        """The subset of step ``self.step`` (see :func:`subset_keys`)."""
        order = torch.argsort(subset_keys(self.seed, self.salt, self.step, self.n_paths), stable=True)
        return torch.zeros_like(self.mask).index_fill_(0, order[: self.n_keep], True)

    @torch.jit.unused
    def set_phase(self, phase: int, mask: Optional[torch.Tensor] = None) -> bool:
        """Move to ``phase`` (0-3); returns whether anything changed. Entering phase 2
        selects the top paths now; entering phase 3 freezes ``mask`` (default: the top
        paths by gate magnitude) and the current gate values."""
        if phase not in (0, 1, 2, 3):
            raise ValueError(f"phase must be 0, 1, 2 or 3, got {phase}")
        if phase == self.phase_now and mask is None:
            return False
        with torch.no_grad():
            if phase == 0:
                self.mask.fill_(True)
            elif phase == 2:
                self.mask.copy_(self.top_mask())
            elif phase == 3:
                new = self.top_mask() if mask is None else mask.to(device=self.mask.device, dtype=torch.bool)
                if new.shape != self.mask.shape or not bool(new.any()):
                    raise ValueError(f"a path mask needs {self.n_paths} entries with at least one True, got {new.tolist()}")
                self.mask.copy_(new)
                self.frozen_gates.copy_(self.gates.detach() * new.to(self.gates.dtype))
            self.phase.fill_(phase)
        self.phase_now = phase
        if phase == 3:
            self._build_kept()
        else:
            self._reset_kept()
        return True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[override]
        # Size the phase-3 state (kept tensor product, kept columns) like the checkpoint's
        # before the buffers and the child modules are loaded.
        if prefix + "path_index" in state_dict:
            error_msgs.append(
                f"{prefix[:-1]}: this state dict comes from a compacted 'sparse' model (only its kept paths); "
                "load it with mace_gaunt_plugin.backends.sparse_backend.load_state_dict(model, state_dict)"
            )
            return
        phase, mask = state_dict.get(prefix + "phase"), state_dict.get(prefix + "mask")
        if phase is not None and mask is not None and mask.shape == self.mask.shape:
            with torch.no_grad():
                self.mask.copy_(mask)
                self.frozen_gates.copy_(state_dict.get(prefix + "frozen_gates", self.frozen_gates))
            self.phase_now = int(phase)
            if self.phase_now == 3:
                self._build_kept()
            else:
                self._reset_kept()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    # ------------------------------------------------------------------ forward
    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, edge_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        if edge_index is not None:
            raise RuntimeError("the 'sparse' conv is not fused: call it per edge, without edge_index")
        training_step = self.training and torch.is_grad_enabled() and self.gates.requires_grad
        if self.phase_now == 3:
            scale = self.kept_scale
            if training_step:
                # Frozen gates take no part; keep them in the graph with zero gradient so
                # DistributedDataParallel does not report an unused parameter.
                scale = scale + 0.0 * self.gates.sum()
            return self.tp_kept(x1, x2, weight.index_select(-1, self.kept_cols) * scale)
        if training_step and (self.phase_now == 1 or self.phase_now == 2):
            with torch.no_grad():
                if self.phase_now == 1:
                    self.step.add_(1)
                    self.mask.copy_(self.random_mask())
                else:
                    self.mask.copy_(self.top_mask())
        path_scale = self.gates * self.mask.to(self.gates.dtype)
        return self.tp(x1, x2, weight * path_scale.index_select(0, self.weight_path))

    def extra_repr(self) -> str:
        return f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, paths {self.n_paths}, keep {self.n_keep}, phase {self.phase_now}"


@compile_mode("script")
class CompactCGConv(BackendModule):
    """The frozen ``sparse`` conv: a CG tensor product of the kept paths only.

    ``weight`` holds only the kept paths' radial weights (``weight_numel`` of them), each
    scaled by its frozen gate. ``irreps_out`` holds only the kept paths' output slots of
    MACE's ``irreps_mid`` (``slot_index`` says which), so no zeros flow through the
    product, the scatter and the linear after it; ``sparse_backend.compact`` rebuilds that
    linear for the smaller input. Build it with ``sparse_backend.compact``.
    """

    fused: bool
    n_paths: int
    weight_numel: int
    paths: List[Tuple[int, int, int]]
    all_paths: List[Tuple[int, int, int]]

    def __init__(self, conv: SparseCGConv) -> None:
        super().__init__(conv.backend_name, conv.site, conv.options())
        if conv.phase_now != 3:
            raise ValueError(f"only a frozen (phase 3) sparse conv can be compacted; this one is in phase {conv.phase_now}")
        keep = [i for i in range(conv.n_paths) if bool(conv.mask[i])]
        old = torch.get_default_dtype()
        torch.set_default_dtype(conv.gates.dtype)  # e3nn computes its coefficients in the default dtype
        try:
            tp, slots = subset_tensor_product(conv.tp, keep, drop_empty_outputs=True)
        finally:
            torch.set_default_dtype(old)
        device = conv.mask.device
        self.tp = tp.to(device=device)
        self.irreps_in1 = conv.irreps_in1
        self.irreps_in2 = conv.irreps_in2
        self.irreps_out = self.tp.irreps_out
        self.irreps_mid_full = conv.irreps_out
        self.fused = False
        self.n_paths = conv.n_paths
        self.weight_numel = int(self.tp.weight_numel)
        self.all_paths = list(conv.paths)
        self.paths = [conv.paths[i] for i in keep]
        self.register_buffer("path_index", torch.tensor(keep, dtype=torch.int64, device=device))
        self.register_buffer("slot_index", torch.tensor(slots, dtype=torch.int64, device=device))
        self.register_buffer("scale", conv.kept_scale.detach().clone())
        if self.weight_numel != int(self.scale.numel()):
            raise ValueError(f"kept product has {self.weight_numel} weights, the frozen conv {self.scale.numel()}")

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, edge_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        if edge_index is not None:
            raise RuntimeError("the 'sparse' conv is not fused: call it per edge, without edge_index")
        return self.tp(x1, x2, weight * self.scale)

    def extra_repr(self) -> str:
        return f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, kept paths {self.paths}"
