"""The TorchScript core that LAMMPS runs: a MACE model evaluated on a graph given by
edge vectors, returning per-atom energies and per-edge forces.

Every edge ``e = (sender s, receiver r)`` carries the vector ``v_e = x_r - x_s``
(MACE's convention). The model sees ``positions = 0`` and ``shifts = v``, so the edge
vectors it computes are ``v`` exactly. The ML-IAP wrapper builds the graph either on the
local atoms only (ghosts replaced by the local atoms they image, one MPI rank) or on the
local and ghost atoms of a rank, where only the first ``n_energy`` nodes (the local
atoms) count towards the energy that is differentiated.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)
from e3nn.util.jit import compile_mode

__all__ = ["MACEEdgeCore", "MACEEdgeCoreExport", "script_core"]


@compile_mode("script")
class MACEEdgeCore(torch.nn.Module):
    """Per-atom energies and per-edge forces of a MACE model on an explicit graph.

    Parameters
    ----------
    model
        A MACE energy model (``mace.modules.MACE`` or ``ScaleShiftMACE``) with any TP
        backend; its parameters are frozen.
    head
        Index of the head to evaluate (multi-head models).

    Forward
    -------
    vectors : ``[n_edges, 3]`` edge vectors ``x_receiver - x_sender``.
    edge_index : ``[2, n_edges]`` int64 ``(sender, receiver)`` node indices.
    species : ``[n_nodes]`` int64 index of each node's element in ``atomic_numbers``.
    n_energy : differentiate the energy of nodes ``0 .. n_energy - 1`` only; ``-1``
        (default): of every node.

    Returns ``(node_energy [n_nodes] float64, edge_forces [n_edges, 3])`` with
    ``edge_forces = -dE/dv``: the force the edge puts on its receiver (and minus it on
    its sender), which is what ML-IAP's ``update_pair_forces`` takes for a pair (i, j)
    with ``r_ij = x_j - x_i = -v``.
    """

    def __init__(self, model: torch.nn.Module, head: int = 0) -> None:
        super().__init__()
        self.model = model
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.register_buffer("atomic_numbers", model.atomic_numbers.clone())
        self.register_buffer("r_max", model.r_max.clone())
        self.register_buffer("head", torch.tensor([head], dtype=torch.long))
        self.num_species = int(model.atomic_numbers.numel())

    def forward(
        self, vectors: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor, n_energy: int = -1
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        node_energy, energy, shifts = self._energies(vectors, edge_index, species)
        total = energy.sum() if n_energy < 0 else node_energy[:n_energy].sum()
        return node_energy.detach().to(torch.float64), self._edge_forces(total, shifts)

    def _energies(
        self, vectors: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(node energies, graph energy, the edge vectors they are differentiable in)."""
        n_nodes = species.shape[0]
        dtype = self.r_max.dtype
        device = vectors.device
        shifts = vectors.to(dtype).detach().requires_grad_(True)
        node_attrs = torch.nn.functional.one_hot(species, num_classes=self.num_species).to(dtype)
        data: Dict[str, torch.Tensor] = {
            "positions": torch.zeros((n_nodes, 3), dtype=dtype, device=device),
            "shifts": shifts,
            "unit_shifts": torch.zeros_like(shifts),
            "edge_index": edge_index,
            "node_attrs": node_attrs,
            "batch": torch.zeros(n_nodes, dtype=torch.long, device=device),
            "ptr": torch.arange(2, dtype=torch.long, device=device) * n_nodes,  # no int(): keeps n_nodes symbolic under tracing
            "cell": torch.zeros((3, 3), dtype=dtype, device=device),
            "head": self.head,
        }
        out = self.model(
            data,
            training=False,
            compute_force=False,
            compute_virials=False,
            compute_stress=False,
        )
        node_energy = out["node_energy"]
        energy = out["energy"]
        if node_energy is None or energy is None:
            raise RuntimeError("the model returned no energies")
        return node_energy, energy, shifts

    def _edge_forces(self, total: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """``-d total / d shifts``; zeros for a graph without edges."""
        grads: List[Optional[torch.Tensor]] = torch.autograd.grad([total], [shifts], allow_unused=True)
        dE_dv = grads[0]
        if dE_dv is None:  # no edges
            dE_dv = torch.zeros_like(shifts)
        return -dE_dv.detach()


class MACEEdgeCoreExport(MACEEdgeCore):
    """:class:`MACEEdgeCore` with ``n_energy`` a 0-d int64 tensor (the nodes
    ``0 .. n_energy - 1`` count), so that ``torch.export`` keeps it an input instead of
    baking one value in; for the ``aotinductor`` engine, never scripted."""

    def forward(  # type: ignore[override]
        self, vectors: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor, n_energy: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        node_energy, _, shifts = self._energies(vectors, edge_index, species)
        counted = torch.arange(node_energy.shape[0], device=node_energy.device) < n_energy
        total = torch.where(counted, node_energy, torch.zeros_like(node_energy)).sum()
        return node_energy.detach().to(torch.float64), self._edge_forces(total, shifts)


def script_core(model: torch.nn.Module, head: int = 0) -> torch.jit.ScriptModule:
    """TorchScript-compile :class:`MACEEdgeCore` around ``model`` (e3nn's compiler,
    like ``mace_run_train`` does for ``*_compiled.model``)."""
    from e3nn.util import jit

    return jit.compile(MACEEdgeCore(model, head=head))
