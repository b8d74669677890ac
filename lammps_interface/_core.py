"""The model core that LAMMPS runs: a MACE model evaluated on a graph given by edge
vectors, each interaction layer on a prefix of it, returning the local atoms' energies
and per-edge forces.

Every edge ``e = (sender s, receiver r)`` carries the vector ``v_e = x_r - x_s``
(MACE's convention). The nodes are sorted by hop depth from the local atoms (the local
atoms first) and the edges by their receiver's depth, so that interaction layer k of n
needs only the nodes within n - k + 1 hops and the edges into nodes within n - k hops:
prefixes, whose sizes the caller passes (:class:`~mace_gaunt_plugin.mace._layered.LayeredMACE`
says which). On one rank every prefix is the whole graph of local atoms (ghosts replaced
by the local atoms they image); on several ranks the graph holds the local atoms and the
ghosts of atoms other ranks own, and the energy differentiated is the local atoms'.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)
from e3nn.util.jit import compile_mode

from mace_gaunt_plugin.mace._layered import LayeredMACE

__all__ = ["MACEEdgeCore", "MACEEdgeCoreExport", "script_core", "full_graph_sizes"]


def full_graph_sizes(n_interactions: int, n_nodes: int, n_edges: int) -> tuple[list[int], list[int]]:
    """The prefix sizes of a graph every layer runs on whole (the one-rank route)."""
    return [n_nodes] * n_interactions, [n_edges] * (n_interactions - 1)


@compile_mode("script")
class MACEEdgeCore(torch.nn.Module):
    """Local-node energies and per-edge forces of a MACE model on an explicit graph.

    Parameters
    ----------
    model
        A MACE energy model (``mace.modules.MACE`` or ``ScaleShiftMACE``) with any TP
        backend; its parameters are frozen.
    head
        Index of the head to evaluate (multi-head models).

    Forward
    -------
    vectors : ``[n_edges, 3]`` edge vectors ``x_receiver - x_sender``, sorted by receiver depth.
    edge_index : ``[2, n_edges]`` int64 ``(sender, receiver)`` node indices.
    species : ``[n_nodes]`` int64 index of each node's element in ``atomic_numbers``,
        nodes sorted by depth (local nodes first).
    nodes : ``n_interactions`` ints, the nodes of depth <= 0, 1, .., n - 1.
    edges : ``n_interactions - 1`` ints, the edges into nodes of depth <= 0, .., n - 2.

    Returns ``(node_energy [nodes[0]] float64, edge_forces [n_edges, 3])``: the local
    nodes' energies and ``edge_forces = -dE/dv`` with E their sum: the force the edge puts
    on its receiver (and minus it on its sender), which is what ML-IAP's
    ``update_pair_forces`` takes for a pair (i, j) with ``r_ij = x_j - x_i = -v``.
    """

    def __init__(self, model: torch.nn.Module, head: int = 0) -> None:
        super().__init__()
        for p in model.parameters():
            p.requires_grad_(False)
        self.layered = LayeredMACE(model)
        self.register_buffer("atomic_numbers", model.atomic_numbers.clone())
        self.register_buffer("r_max", model.r_max.clone())
        self.register_buffer("head", torch.tensor([head], dtype=torch.long))
        self.num_species = int(model.atomic_numbers.numel())
        self.num_interactions = int(model.num_interactions)

    def forward(
        self, vectors: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor, nodes: List[int], edges: List[int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        return self._run(vectors, edge_index, species, nodes, edges)

    def _run(
        self, vectors: torch.Tensor, edge_index: torch.Tensor, species: torch.Tensor, nodes: List[int], edges: List[int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        dtype = self.r_max.dtype
        shifts = vectors.to(dtype).detach().requires_grad_(True)
        node_attrs = torch.nn.functional.one_hot(species, num_classes=self.num_species).to(dtype)
        node_energy = self.layered(shifts, edge_index, node_attrs, nodes, edges, self.head)
        return node_energy.detach(), self._edge_forces(node_energy.sum(), shifts)

    def _edge_forces(self, total: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """``-d total / d shifts``; zeros for a graph without edges."""
        grads: List[Optional[torch.Tensor]] = torch.autograd.grad([total], [shifts], allow_unused=True)
        dE_dv = grads[0]
        if dE_dv is None:  # no edges
            dE_dv = torch.zeros_like(shifts)
        return -dE_dv.detach()


class MACEEdgeCoreExport(MACEEdgeCore):
    """:class:`MACEEdgeCore` with the prefix sizes given as the lengths of 1-d marker
    tensors (their contents are never read), so that ``torch.export`` keeps them dynamic
    sizes instead of baking values in; for the ``aotinductor`` engine, never scripted."""

    def forward(  # type: ignore[override]
        self,
        vectors: torch.Tensor,
        edge_index: torch.Tensor,
        species: torch.Tensor,
        node_marks: List[torch.Tensor],
        edge_marks: List[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        nodes = [m.shape[0] for m in node_marks]
        edges = [m.shape[0] for m in edge_marks]
        return self._run(vectors, edge_index, species, nodes, edges)


def size_marks(sizes: List[int], device: torch.device) -> List[torch.Tensor]:
    """The marker tensors of :class:`MACEEdgeCoreExport` for ``sizes``."""
    return [torch.empty(int(n), dtype=torch.uint8, device=device) for n in sizes]


def script_core(model: torch.nn.Module, head: int = 0) -> torch.jit.ScriptModule:
    """TorchScript-compile :class:`MACEEdgeCore` around ``model`` (e3nn's compiler,
    like ``mace_run_train`` does for ``*_compiled.model``)."""
    from e3nn.util import jit

    return jit.compile(MACEEdgeCore(model, head=head))
