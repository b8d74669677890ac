"""Helpers shared by the test suite, the benchmarks and third-party backend authors:
small MACE configurations, batches from ASE atoms, and the O(3) checks every backend
must pass. Importing this module imports torch and mace."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import torch

import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn loads)
from e3nn import o3

__all__ = [
    "TOLERANCES",
    "default_dtype",
    "small_mace_config",
    "atoms_to_batch",
    "model_energy_forces",
    "random_orthogonal",
]

#: Absolute tolerances for float comparisons that should be exact up to rounding.
TOLERANCES = {torch.float32: 1e-4, torch.float64: 1e-10}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[torch.dtype]:
    """Run a block with torch's default dtype set to ``dtype`` (models and batches are
    built in it) and restore the previous default afterwards, also on error."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield dtype
    finally:
        torch.set_default_dtype(old)


def small_mace_config(
    hidden_irreps: str = "8x0e + 8x1o",
    max_ell: int = 3,
    correlation: int = 3,
    num_interactions: int = 2,
    atomic_numbers: Sequence[int] = (1, 6, 7, 8),
    r_max: float = 5.0,
    interaction: str = "RealAgnosticResidualInteractionBlock",
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``mace.modules.ScaleShiftMACE`` describing a small model
    (the defaults match MACE's own defaults except for size)."""
    from mace import modules

    z = list(atomic_numbers)
    config: dict[str, Any] = dict(
        r_max=r_max,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=max_ell,
        interaction_cls=modules.interaction_classes[interaction],
        interaction_cls_first=modules.interaction_classes[interaction],
        num_interactions=num_interactions,
        num_elements=len(z),
        hidden_irreps=o3.Irreps(hidden_irreps),
        MLP_irreps=o3.Irreps("16x0e"),
        gate=torch.nn.functional.silu,
        atomic_energies=np.linspace(-1.0, -4.0, len(z)),
        avg_num_neighbors=8.0,
        atomic_numbers=z,
        correlation=correlation,
        radial_MLP=[16, 16],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    config.update(overrides)
    return config


def atoms_to_batch(atoms_list: Sequence[Any], atomic_numbers: Sequence[int], r_max: float, device: str = "cpu") -> dict[str, torch.Tensor]:
    """A MACE input dict for a list of ``ase.Atoms`` (neighbour lists by MACE itself)."""
    from mace import data, tools
    from mace.tools import torch_geometric

    z_table = tools.AtomicNumberTable(list(atomic_numbers))
    configs = [data.config_from_atoms(a) for a in atoms_list]
    graphs = [data.AtomicData.from_config(c, z_table=z_table, cutoff=r_max) for c in configs]
    loader = torch_geometric.dataloader.DataLoader(graphs, batch_size=len(graphs), shuffle=False, drop_last=False)
    batch = next(iter(loader)).to(device)
    out = batch.to_dict()
    dtype = torch.get_default_dtype()
    return {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in out.items()}


def model_energy_forces(model: torch.nn.Module, batch: dict[str, torch.Tensor], training: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Energies ``[n_graphs]`` and forces ``[n_atoms, 3]`` of ``model`` on ``batch``."""
    out = model(dict(batch), training=training, compute_force=True)
    return out["energy"], out["forces"]


def random_orthogonal(seed: int, reflect: bool, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A random 3x3 rotation (``reflect=False``) or rotation times inversion."""
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q = -q
    if reflect:
        q = -q
    return q.to(dtype)


def irreps_transform(irreps: o3.Irreps, rotation: torch.Tensor) -> torch.Tensor:
    """The representation matrix of ``irreps`` for an O(3) element (e3nn's D_from_matrix)."""
    return o3.Irreps(irreps).D_from_matrix(rotation)
