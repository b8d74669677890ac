"""The ``sparse`` backend: MACE's Clebsch-Gordan conv with learned path gates
(SPHNet-style), trained in three phases and saved as a compact CG product.

Schedule (epochs counted from 0 by ``mace_run_train``; options ``random_epochs`` = R,
``gated_epochs`` = G):

* epochs ``[0, R)``: phase 1, a fresh random subset of ``ceil((1 - sparsity) * n)`` paths
  every training step (each layer its own subset), gates learn;
* epochs ``[R, R + G)``: phase 2, the paths of largest ``|gate|``, re-chosen every step;
* from epoch ``R + G``: phase 3, frozen: fixed path set and gates; only kept paths run.

``NAME.model`` written by ``mace_run_train`` is compact (:func:`compact`) when the saved
model reached phase 3: a CG product of the kept paths only, writing only their output
slots, the linear after it rebuilt for those slots, and a radial MLP whose last layer
keeps only their weights. Training state (phase, path mask, step counter, frozen
gates) lives in buffers, so checkpoints and ``--restart_latest`` resume it exactly.

Functions: :func:`kept_paths`, :func:`freeze`, :func:`compact`, :func:`load_state_dict`.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch
from e3nn import o3

from ..errors import BackendError
from ._sparse_cg import CompactCGConv, SparseCGConv, n_kept
from .base import Option, TPBackend

__all__ = [
    "SPARSE_BACKEND",
    "SparseBackend",
    "SparseCGConv",
    "CompactCGConv",
    "kept_paths",
    "freeze",
    "compact",
    "load_state_dict",
    "phase_of_epoch",
    "parameter_count",
    "n_kept",
]

log = logging.getLogger(__name__)

Path = tuple[int, int, int]


def _sparsity(value: Any) -> float:
    s = float(value)
    if not 0.0 <= s < 1.0:
        raise ValueError("sparsity is the fraction of paths dropped and must be in [0, 1)")
    return s


def _epochs(value: Any) -> int:
    n = int(value)
    if n < 0 or float(value) != n:
        raise ValueError("a phase length is a whole number of epochs >= 0")
    return n


def _seed(value: Any) -> int:
    """A seed TorchScript and torch generators can hold: a whole number in the int64 range."""
    if isinstance(value, bool):
        raise ValueError("a seed is a whole number, not a boolean")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("a seed is a whole number")
        value = int(value)
    n = int(value)
    if not -(1 << 63) <= n < (1 << 63):
        raise ValueError("a seed must fit in 64 bits (-2**63 <= seed < 2**63)")
    return n


OPTIONS = (
    Option("sparsity", 0.5, "fraction of CG paths per conv layer to drop, in [0, 1)", _sparsity),
    Option("random_epochs", 10, "phase 1 length (epochs): a random path subset every training step", _epochs),
    Option("gated_epochs", 10, "phase 2 length (epochs): the top paths by learned gate every step; then frozen", _epochs),
    Option("seed", 0, "seed of the phase-1 random path subsets (fits in 64 bits)", _seed),
)


def phase_of_epoch(epoch: int, random_epochs: int, gated_epochs: int) -> int:
    """The schedule: phase 1, 2 or 3 for a 0-based training ``epoch``.

    >>> [phase_of_epoch(e, 1, 2) for e in range(5)]
    [1, 2, 2, 3, 3]
    """
    if epoch < random_epochs:
        return 1
    if epoch < random_epochs + gated_epochs:
        return 2
    return 3


# ---------------------------------------------------------------------- model walking
def _conv_blocks(model: torch.nn.Module) -> Iterator[tuple[torch.nn.Module, torch.nn.Module]]:
    """(interaction block, its sparse conv) in model order (eager or compact)."""
    for module in model.modules():
        conv = getattr(module, "conv_tp", None)
        if isinstance(conv, (SparseCGConv, CompactCGConv)):
            yield module, conv


def _sparse_convs(model: torch.nn.Module) -> list[SparseCGConv]:
    return [conv for _, conv in _conv_blocks(model) if isinstance(conv, SparseCGConv)]


def kept_paths(model: torch.nn.Module) -> list[list[Path]]:
    """Per interaction layer (model order), the ``(l1, l2, l3)`` CG paths the model
    computes now: node-feature degree x edge-harmonic degree -> output degree.

    For a model in phase 0-2 this is the path set evaluation uses (its ``mask``); for a
    frozen or compact model, the kept paths. Also works on a TorchScript-compiled model.

    >>> # kept_paths(model) -> [[(0, 0, 0), (0, 1, 1)], [(0, 0, 0), (1, 1, 0), ...]]
    """
    out: list[list[Path]] = []
    for module in model.modules():
        conv = getattr(module, "conv_tp", None)
        if conv is None or str(getattr(conv, "backend_name", "")) != "sparse":
            continue
        paths = [tuple(int(v) for v in p) for p in conv.paths]
        if hasattr(conv, "path_index"):  # compact: ``paths`` already lists the kept ones
            out.append(paths)  # type: ignore[arg-type]
        else:
            out.append([p for p, keep in zip(paths, conv.mask.tolist()) if keep])  # type: ignore[misc]
    return out


def _format(paths: list[list[Path]]) -> str:
    return "; ".join(f"layer {i}: " + " ".join(f"{a}x{b}->{c}" for a, b, c in layer) for i, layer in enumerate(paths))


# ---------------------------------------------------------------------- freezing, compaction
MaskLike = Union[torch.Tensor, Sequence[bool], Sequence[int]]


def _as_mask(conv: SparseCGConv, given: MaskLike) -> torch.Tensor:
    t = torch.as_tensor(given)
    if t.dtype == torch.bool:
        return t
    mask = torch.zeros(conv.n_paths, dtype=torch.bool)
    idx = t.to(torch.int64).reshape(-1)
    if idx.numel() and (idx.min() < 0 or idx.max() >= conv.n_paths):
        raise BackendError(f"path indices must be in [0, {conv.n_paths}), got {idx.tolist()}")
    return mask.index_fill_(0, idx, True)


def freeze(model: torch.nn.Module, masks: Optional[Sequence[Optional[MaskLike]]] = None) -> torch.nn.Module:
    """Enter phase 3 in place: fix each layer's path set and gate values.

    Parameters
    ----------
    model : torch.nn.Module
        A model built with the ``sparse`` backend (training form).
    masks : sequence, optional
        Per interaction layer, the paths to keep (a bool mask over the layer's paths or a
        list of path indices; ``None`` for a layer keeps its top paths by ``|gate|``).
        Default: the top paths by ``|gate|`` in every layer.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.
    """
    convs = _sparse_convs(model)
    if not convs:
        raise BackendError("freeze: the model has no 'sparse' conv in training form (built with another backend, or compact already)")
    if masks is not None and len(masks) != len(convs):
        raise BackendError(f"freeze: got {len(masks)} masks for {len(convs)} sparse conv layers")
    for i, conv in enumerate(convs):
        given = None if masks is None else masks[i]
        try:
            conv.set_phase(3, None if given is None else _as_mask(conv, given))
        except ValueError as exc:
            raise BackendError(f"freeze, layer {i}: {exc}") from None
    return model


def _mlp_error(what: str) -> BackendError:
    return BackendError(f"cannot compact {what}")


def _linear_after_conv(block: torch.nn.Module, irreps_mid: o3.Irreps) -> tuple[str, o3.Linear]:
    """The block's e3nn ``Linear`` that reads the conv output (MACE's ``linear``, or
    ``linear_1`` in the non-linear interaction block)."""
    found = [(name, m) for name, m in block.named_children() if isinstance(m, o3.Linear) and m.irreps_in == irreps_mid]
    if len(found) > 1:  # e.g. the non-linear block's linear_2 (target -> target) can match too
        found = [(name, m) for name, m in found if name in ("linear", "linear_1")]
    if len(found) != 1:
        raise BackendError(
            f"cannot compact {type(block).__name__}: expected one e3nn Linear reading the conv output "
            f"({irreps_mid}), found {[name for name, _ in found]}"
        )
    return found[0]


def _shrunk_linear(lin: o3.Linear, slots: list[int]) -> o3.Linear:
    """``lin`` restricted to input slots ``slots`` (the kept paths' outputs).

    e3nn's ``Linear`` multiplies each weight block by 1/sqrt(fan-in of its output irrep);
    dropping inputs lowers the fan-in, so every kept block is multiplied by the ratio of
    the old and new coefficients: the same function up to rounding (~1e-16 relative).
    """
    default = [(i, o) for i, (_, a) in enumerate(lin.irreps_in) for o, (_, b) in enumerate(lin.irreps_out) if a == b]
    weighted = [ins for ins in lin.instructions if ins.i_in != -1]
    if [(ins.i_in, ins.i_out) for ins in weighted] != default or not lin.internal_weights:
        raise BackendError("cannot compact a conv whose following Linear has custom instructions or external weights")
    irreps_in = o3.Irreps([lin.irreps_in[j] for j in slots])
    old_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):  # o3.Linear draws initial weights: leave the caller's RNG alone
        torch.set_default_dtype(lin.weight.dtype)
        try:
            new = o3.Linear(irreps_in, lin.irreps_out, internal_weights=True, shared_weights=True, biases=bool(lin.bias_numel))
        finally:
            torch.set_default_dtype(old_dtype)
    new = new.to(lin.weight.device)
    blocks, offset = {}, 0
    for ins in weighted:
        size = math.prod(ins.path_shape)
        blocks[(ins.i_in, ins.i_out)] = (offset, size, ins.path_weight)
        offset += size
    with torch.no_grad():
        offset = 0
        for ins in new.instructions:
            if ins.i_in == -1:
                continue
            start, size, weight = blocks[(slots[ins.i_in], ins.i_out)]
            new.weight[offset : offset + size] = lin.weight[start : start + size] * (weight / ins.path_weight)
            offset += size
        if lin.bias_numel:
            new.bias.copy_(lin.bias)
    new.weight.requires_grad_(lin.weight.requires_grad)
    return new


def _compact_block(block: torch.nn.Module, conv: SparseCGConv) -> None:
    from ..mace import _seam  # the radial MLP's internals are MACE's and e3nn's

    mlp = getattr(block, "conv_tp_weights", None)
    if mlp is None:
        raise BackendError(f"{type(block).__name__} has a sparse conv_tp but no conv_tp_weights radial MLP to compact")
    width = _seam.radial_mlp_width(mlp, _mlp_error)
    if width != conv.weight_numel:
        raise BackendError(f"radial MLP gives {width} weights, the sparse conv expects {conv.weight_numel}")
    name, lin = _linear_after_conv(block, conv.irreps_out)
    small = CompactCGConv(conv)
    setattr(block, name, _shrunk_linear(lin, small.slot_index.tolist()))
    _seam.shrink_radial_mlp(mlp, conv.kept_cols, _mlp_error)
    block.conv_tp = small


def compact(model: torch.nn.Module, inplace: bool = False) -> torch.nn.Module:
    """The frozen model in compact form: every sparse conv becomes a :class:`CompactCGConv`
    of its kept paths (output: only their slots of MACE's ``irreps_mid``), the e3nn
    ``Linear`` reading the conv output is rebuilt for those slots, and the radial MLP's
    last layer keeps only the kept paths' weights.

    Computes the same function as the frozen training form, up to rounding (the linear's
    fan-in normalization changes and is folded into its weights; tested to 1e-12 in
    float64). Compact
    models cannot train the path selection further; their state dicts load into a freshly
    built model with :func:`load_state_dict`.

    Raises
    ------
    BackendError
        A sparse conv is not frozen (call :func:`freeze` first, or train into phase 3).
    """
    convs = _sparse_convs(model)
    not_frozen = [i for i, c in enumerate(convs) if c.phase_now != 3]
    if not_frozen:
        raise BackendError(f"compact: sparse conv layer(s) {not_frozen} are not frozen (phase 3); call freeze(model) first")
    out = model if inplace else copy.deepcopy(model)
    for block, conv in list(_conv_blocks(out)):
        if isinstance(conv, SparseCGConv):
            _compact_block(block, conv)
    return out


def load_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> Any:
    """``model.load_state_dict(state_dict)`` for a freshly built ``sparse`` model, also when
    ``state_dict`` comes from a compact model: the layers it holds compact are first frozen
    to its kept paths and compacted in place. Returns ``load_state_dict``'s result."""
    names = {id(m): n for n, m in model.named_modules()}
    for block, conv in list(_conv_blocks(model)):
        key = f"{names[id(block)]}.conv_tp.path_index".lstrip(".")
        if isinstance(conv, SparseCGConv) and key in state_dict:
            conv.set_phase(3, _as_mask(conv, state_dict[key].cpu()))
            _compact_block(block, conv)
    return model.load_state_dict(state_dict, strict=strict)


def parameter_count(model: torch.nn.Module) -> int:
    """Number of scalars in ``model.parameters()``."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------- the backend
@dataclass
class SparseBackend(TPBackend):
    """CG conv with learned path gates; product site left to MACE."""

    def build_conv(
        self,
        irreps_node: o3.Irreps,
        irreps_edge: o3.Irreps,
        irreps_out: o3.Irreps,
        instructions: Optional[list],
        options: Mapping[str, Any],
    ) -> torch.nn.Module:
        if instructions is None:
            raise BackendError("the 'sparse' conv needs MACE's tensor-product instructions (got None)")
        return SparseCGConv(irreps_node, irreps_edge, irreps_out, instructions, options)

    def on_epoch_start(self, model: torch.nn.Module, epoch: int, steps_per_epoch: int) -> None:
        """Set every sparse layer to the phase of ``epoch`` (see :func:`phase_of_epoch`)."""
        convs = _sparse_convs(model)
        for layer, conv in enumerate(convs):
            conv.salt = layer
        changed = []
        for conv in convs:
            opts = conv.options()
            target = phase_of_epoch(epoch, int(opts["random_epochs"]), int(opts["gated_epochs"]))
            before = conv.phase_now
            if target < before:
                log.warning("sparse TP: epoch %d belongs to phase %d but the model is in phase %d; going back", epoch, target, before)
            if conv.set_phase(target):
                changed.append(target)
        if not changed:
            return
        phase = max(changed)
        if phase == 1:
            sizes = ", ".join(f"{c.n_keep} of {c.n_paths}" for c in convs)
            log.info("sparse TP: epoch %d, phase 1; random path subsets every training step (%s paths per layer)", epoch, sizes)
        else:
            log.info("sparse TP: epoch %d, phase %d; paths used now: %s", epoch, phase, _format(kept_paths(model)))

    def before_save(self, model: torch.nn.Module) -> torch.nn.Module:
        """The compact form of a model in phase 3; other models unchanged (with a warning)."""
        convs = _sparse_convs(model)
        if not convs:
            return model
        phases = sorted({c.phase_now for c in convs})
        if phases != [3]:
            log.warning(
                "sparse TP: the model to save is in phase %s, not frozen (phase 3): it is saved in training form "
                "with its current path set (%s). Train for more than random_epochs + gated_epochs epochs "
                "(mace_run_train saves the best checkpoint; --save_all_checkpoints makes it the last one).",
                phases, _format(kept_paths(model)),
            )  # fmt: skip
            return model
        out = compact(model)
        log.info(
            "sparse TP: saving the compact model (%d parameters, %d in training form); kept paths: %s",
            parameter_count(out), parameter_count(model), _format(kept_paths(out)),
        )  # fmt: skip
        return out


SPARSE_BACKEND = SparseBackend(
    name="sparse",
    description="MACE's CG conv with learned per-path gates (SPHNet-style): random, gated, then frozen compact paths",
    options=OPTIONS,
    function_family="sparse-cg",
)
