"""The graph the ML-IAP wrapper hands the model core, built from LAMMPS' pair lists (numpy).

Nodes are atoms; an edge is a LAMMPS pair ``(i, j)`` read as sender ``j``, receiver ``i``.
:func:`layered_graph` maps ghost atoms that image a local atom of this rank (same atom
ID) to that local atom, keeps the local atoms and the ghosts of atoms other ranks own as
nodes, and prunes by hop depth for a model of n interactions (see
:mod:`mace_gaunt_plugin.mace._layered`): a node's depth is its distance in edges from the
local atoms (0 for them); nodes deeper than n and edges into nodes deeper than n - 1 carry
no work and are dropped; nodes are sorted by depth, edges by their receiver's depth, so
that every layer's nodes and edges are prefixes, whose sizes it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["LayeredGraph", "depth_order", "layered_graph", "node_of_atom"]


@dataclass
class LayeredGraph:
    """A graph ready for the model core.

    ``atoms``: the LAMMPS atom of each node (the local atoms first, as nodes
    ``0 .. n_local - 1``); ``senders``, ``receivers``: node indices per edge; ``pairs``: the
    LAMMPS pair of each edge (None: every pair, in order); ``nodes``, ``edges``: the prefix
    sizes (``n`` and ``n - 1`` entries) of :class:`~mace_gaunt_plugin.mace._layered.LayeredMACE`;
    ``eatom_nodes``: the node of each atom of ML-IAP's list (None: node k is atom k of it)."""

    atoms: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    pairs: Optional[np.ndarray]
    nodes: list[int]
    edges: list[int]
    eatom_nodes: Optional[np.ndarray] = None

    @classmethod
    def whole(cls, atoms: np.ndarray, senders: np.ndarray, receivers: np.ndarray, pairs: Optional[np.ndarray],
              n_layers: int) -> "LayeredGraph":
        """A graph every layer runs on whole (the one-rank route)."""
        return cls(atoms, senders, receivers, pairs, [len(atoms)] * n_layers, [len(senders)] * (n_layers - 1))

    def layer_counts(self) -> list[tuple[int, int, int]]:
        """Per interaction layer (first to last): (nodes read, nodes updated, edges)."""
        n = len(self.nodes)
        full_nodes = self.nodes + [len(self.atoms)]
        full_edges = self.edges + [len(self.senders)]
        return [(full_nodes[n - i], full_nodes[n - i - 1], full_edges[n - i - 1]) for i in range(n)]


def node_of_atom(tags: np.ndarray, nlocal: int) -> np.ndarray:
    """Node of each LAMMPS atom (local and ghost): a local atom is its own node, a ghost
    whose atom ID is a local atom's is that local atom's node, any other ghost a node of
    its own (``nlocal``, ``nlocal + 1``, .. in LAMMPS' order). Raises ``ValueError`` for
    atoms without IDs."""
    tags = np.asarray(tags, dtype=np.int64)
    local_tags = tags[:nlocal]
    if tags.size and tags.min() <= 0:
        raise ValueError("atoms have no IDs (atom_modify id no): the wrapper needs atom IDs")
    local_of_tag = np.full(int(tags.max(initial=0)) + 1, -1, dtype=np.int64)
    local_of_tag[local_tags] = np.arange(nlocal)
    node = local_of_tag[tags]
    foreign = node < 0
    node[foreign] = nlocal + np.arange(int(foreign.sum()))
    return node


def depth_order(senders: np.ndarray, receivers: np.ndarray, n_nodes: int, n_local: int, n_layers: int):
    """Hop depth of every node from nodes ``0 .. n_local - 1`` (through edges sender ->
    receiver, walked backwards), capped at ``n_layers + 1`` for nodes beyond.
    Returns (depth per node, kept nodes sorted by depth, kept edges sorted by their
    receiver's depth, nodes per depth prefix [n_layers], edges per depth prefix [n_layers - 1])."""
    far = n_layers + 1
    depth = np.full(n_nodes, far, dtype=np.int64)
    depth[:n_local] = 0
    for d in range(n_layers):
        senders_d = senders[depth[receivers] == d]
        depth[senders_d] = np.minimum(depth[senders_d], d + 1)
    kept_nodes = np.flatnonzero(depth <= n_layers)
    kept_nodes = kept_nodes[np.argsort(depth[kept_nodes], kind="stable")]
    edge_depth = depth[receivers]
    kept_edges = np.flatnonzero(edge_depth < n_layers)
    kept_edges = kept_edges[np.argsort(edge_depth[kept_edges], kind="stable")]
    node_counts = np.bincount(depth[kept_nodes], minlength=n_layers + 1).cumsum()
    edge_counts = np.bincount(edge_depth[kept_edges], minlength=n_layers).cumsum()
    return depth, kept_nodes, kept_edges, [int(c) for c in node_counts[:n_layers]], [int(c) for c in edge_counts[: n_layers - 1]]


def layered_graph(tags: np.ndarray, nlocal: int, pair_i: np.ndarray, jatoms: np.ndarray, n_layers: int) -> LayeredGraph:
    """The pruned graph of a rank (see the module docstring) from the atom IDs of its
    local and ghost atoms and its pairs (``pair_i`` local or ghost, ``jatoms``)."""
    node = node_of_atom(tags, nlocal)
    n_nodes = int(node.max(initial=nlocal - 1)) + 1
    # pairs into an atom that is a node (a local atom, or a ghost of another rank's atom)
    own_image = np.zeros(len(node), dtype=bool)
    own_image[nlocal:] = node[nlocal:] < nlocal
    used = np.flatnonzero(~own_image[pair_i])
    senders, receivers = node[jatoms[used]], node[pair_i[used]]
    depth, kept_nodes, kept_edges, nodes, edges = depth_order(senders, receivers, n_nodes, nlocal, n_layers)
    new_index = np.full(n_nodes, -1, dtype=np.int64)
    new_index[kept_nodes] = np.arange(len(kept_nodes))
    atom_of_node = np.empty(n_nodes, dtype=np.int64)
    atom_of_node[node] = np.arange(len(node))
    atom_of_node[:nlocal] = np.arange(nlocal)  # a local atom's node is that atom, not one of its images
    return LayeredGraph(
        atoms=atom_of_node[kept_nodes],
        senders=new_index[senders[kept_edges]],
        receivers=new_index[receivers[kept_edges]],
        pairs=used[kept_edges],
        nodes=nodes,
        edges=edges,
    )
