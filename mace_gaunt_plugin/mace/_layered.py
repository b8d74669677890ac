"""MACE's energy forward, layer by layer, on a graph whose later layers need fewer nodes.

:class:`LayeredMACE` computes what ``MACE.forward`` / ``ScaleShiftMACE.forward`` of
mace-torch 0.3.16 compute for the node energies (seam 8 of :mod:`._seam`: it calls the
model's own embedding, spherical harmonics, radial embedding, interaction, product,
readout, atomic-energy, scale-shift and pair-repulsion modules through their forwards, in
MACE's order), but lets each interaction layer run on a prefix of the nodes and edges.

Why: on an MPI rank of LAMMPS, a local atom's energy after n interactions sees atoms up to
n hops away, but layer k only needs outputs at atoms within n - k hops of a local atom,
and reads senders within n - k + 1 hops. With the nodes ordered by hop depth (local atoms,
depth 0, first) and the edges by their receiver's depth, every layer's receivers, senders
and edges are prefixes:

* ``nodes[d]`` = number of nodes of depth <= d, for d = 0 .. n (``nodes[n]`` = every node);
* ``edges[d]`` = number of edges whose receiver has depth <= d, for d = 0 .. n - 1
  (``edges[n - 1]`` = every edge: an edge into a node of depth n carries no work).

Layer i (0-based) runs on ``node_feats[:nodes[n - i]]`` with the first ``edges[n - i - 1]``
edges and keeps ``nodes[n - i - 1]`` nodes; readouts run on the ``nodes[0]`` local nodes,
so the energies returned are those of the local nodes only. With every prefix the whole
graph (one rank) this is MACE's forward.
"""

from __future__ import annotations

from typing import List, Optional

import torch
from e3nn.util.jit import compile_mode

from . import _seam

__all__ = ["LayeredMACE", "UnsupportedModelError", "check_supported"]


class UnsupportedModelError(ValueError):
    """A model :class:`LayeredMACE` cannot run exactly (another class, an extra feature)."""


def check_supported(model: torch.nn.Module) -> None:
    """Refuse, with the reason, a model whose forward the layered one does not replicate."""
    _seam.require_layered_forward()
    name = type(model).__name__
    if type(model) not in _seam.layered_model_classes():
        raise UnsupportedModelError(
            f"the LAMMPS core runs MACE's layers itself and knows the energy models MACE and ScaleShiftMACE; "
            f"this model is a {name}: export a MACE or ScaleShiftMACE model"
        )
    if hasattr(model, "joint_embedding"):
        raise UnsupportedModelError(
            f"this {name} has extra per-graph embeddings (embedding_specs), which LAMMPS does not provide"
        )


@compile_mode("script")
class LayeredMACE(torch.nn.Module):
    """Local-node energies of a MACE energy model, each layer on a prefix of the graph.

    Forward
    -------
    vectors : ``[n_edges, 3]`` edge vectors ``x_receiver - x_sender`` (model dtype).
    edge_index : ``[2, n_edges]`` int64 ``(sender, receiver)``, sorted by receiver depth.
    node_attrs : ``[n_nodes, n_species]`` one-hot species, nodes sorted by depth.
    nodes, edges : the prefix sizes of the module docstring, without the last ones (the
        graph's node and edge counts): ``n`` and ``n - 1`` entries.
    head : ``[1]`` int64, the head evaluated.

    Returns the energies ``[nodes[0]]`` (float64) of the local nodes: E0, pair repulsion
    and interaction energies, as MACE's ``node_energy``.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        check_supported(model)
        self.num_interactions = int(model.num_interactions)
        self.atomic_energies_fn = model.atomic_energies_fn
        self.node_embedding = model.node_embedding
        self.spherical_harmonics = model.spherical_harmonics
        self.radial_embedding = model.radial_embedding
        self.interactions = model.interactions
        self.products = model.products
        self.readouts = model.readouts
        self.register_buffer("atomic_numbers", model.atomic_numbers.clone())
        # present only where the model has them: TorchScript compiles a hasattr branch only then
        if hasattr(model, "pair_repulsion"):
            self.pair_repulsion_fn = model.pair_repulsion_fn
        if _seam.scales_and_shifts(model):
            self.scale_shift = model.scale_shift

    def forward(
        self,
        vectors: torch.Tensor,
        edge_index: torch.Tensor,
        node_attrs: torch.Tensor,
        nodes: List[int],
        edges: List[int],
        head: torch.Tensor,
    ) -> torch.Tensor:
        n = self.num_interactions
        nodes = nodes + [node_attrs.shape[0]]
        edges = edges + [vectors.shape[0]]
        n_local = nodes[0]
        local_heads = head.expand(n_local)
        local_arange = torch.arange(n_local, device=vectors.device)
        lengths = torch.linalg.norm(vectors, dim=-1, keepdim=True)

        node_e0 = self.atomic_energies_fn(node_attrs[:n_local])[local_arange, local_heads]
        node_feats = self.node_embedding(node_attrs)
        edge_attrs = self.spherical_harmonics(vectors)
        edge_feats, cutoff = self.radial_embedding(lengths, node_attrs, edge_index, self.atomic_numbers)

        node_es_list: List[torch.Tensor] = []
        if hasattr(self, "pair_repulsion_fn"):
            # receivers of depth 0 only: the edges of the last layer
            e = edges[0]
            pair = self.pair_repulsion_fn(lengths[:e], node_attrs, edge_index[:, :e], self.atomic_numbers)
            node_es_list.append(pair[:n_local])
        else:
            node_es_list.append(torch.zeros_like(node_e0))

        node_feats_list: List[torch.Tensor] = []
        for i, (interaction, product) in enumerate(zip(self.interactions, self.products)):
            n_in, n_out, e = nodes[n - i], nodes[n - i - 1], edges[n - i - 1]
            node_feats, sc = interaction(
                node_attrs=node_attrs[:n_in],
                node_feats=node_feats[:n_in],
                edge_attrs=edge_attrs[:e],
                edge_feats=edge_feats[:e],
                edge_index=edge_index[:, :e],
                cutoff=_prefix(cutoff, e),
                first_layer=(i == 0),
            )
            node_feats = product(node_feats=node_feats[:n_out], sc=_prefix(sc, n_out), node_attrs=node_attrs[:n_out])
            node_feats_list.append(node_feats)

        for i, readout in enumerate(self.readouts):
            feat_idx = -1 if len(self.readouts) == 1 else i
            node_es_list.append(
                readout(node_feats_list[feat_idx][:n_local], local_heads)[local_arange, local_heads]
            )

        if hasattr(self, "scale_shift"):
            node_inter_es = torch.sum(torch.stack(node_es_list, dim=0), dim=0)
            node_inter_es = self.scale_shift(node_inter_es, local_heads)
            return node_e0.double() + node_inter_es.double()
        return torch.sum(torch.stack([node_e0] + node_es_list, dim=-1), dim=-1).double()


def _prefix(x: Optional[torch.Tensor], n: int) -> Optional[torch.Tensor]:
    return None if x is None else x[:n]
