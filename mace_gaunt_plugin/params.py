"""Free-parameter counts of MACE models built with different TP backends.

A Gaunt-family conv has ``C * n_l2`` (``conv_weights="l2"``) or ``C * n_l1 * n_l2``
(``"l1l2"``) weights per edge where e3nn's ``uvu`` tensor product has ``C`` per CG path
``(l1, l2, l3)``; the radial MLP's last layer and the linear after the conv shrink with
it. With ``"path"`` the conv has e3nn's ``C`` per path and MACE's output irreps, so its
conv count is e3nn's exactly; ``"node_path"`` has ``C`` per degree pair ``(l1, l2)`` in
the radial MLP and ``path``'s per-path linear. The Gaunt product has
``n_elements * C * correlation * n_L`` weights (``power``) where MACE's symmetric
contraction has one per element, channel and coupled CG basis function; ``factors`` and
``cp`` add ``n_elements * C * n_l`` per reweighted factor (``cp``: ``product_rank`` times
``factors``' count) and ``cp`` has ``1 + product_rank * (correlation - 1)`` projection
weights per (element, channel, L) instead of ``correlation``.

>>> # from mace_gaunt_plugin.params import count_parameters
>>> # count_parameters("grid", **small_mace_config())["total"]
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch

__all__ = ["count_parameters", "parameter_table"]


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_parameters(backend: str, backend_options: Optional[Mapping[str, Any]] = None, **mace_kwargs: Any) -> dict[str, int]:
    """Build ``ScaleShiftMACE(**mace_kwargs)`` with ``backend`` and count its parameters.

    Returns
    -------
    dict
        ``conv`` (radial MLPs feeding the conv, conv modules and the linears right after
        them, summed over layers), ``product`` (many-body product weights and the linear
        after it), ``other`` and ``total``.
    """
    from .mace import build_model

    model = build_model(backend, backend_options=backend_options, **mace_kwargs)
    conv = 0
    for block in model.interactions:
        for name in ("conv_tp", "conv_tp_weights", "linear", "linear_1"):
            sub = getattr(block, name, None)
            if isinstance(sub, torch.nn.Module):
                conv += _count(sub)
    product = sum(_count(p) for p in model.products)
    total = _count(model)
    return {"conv": conv, "product": product, "other": total - conv - product, "total": total}


def parameter_table(rows: Mapping[str, tuple[str, Mapping[str, Any]]], **mace_kwargs: Any) -> str:
    """A Markdown table of :func:`count_parameters` for ``{label: (backend, options)}``."""
    lines = ["| model | conv (MLP + TP + linear) | product (+ linear) | other | total |", "|---|---:|---:|---:|---:|"]
    for label, (backend, options) in rows.items():
        c = count_parameters(backend, options, **mace_kwargs)
        lines.append(f"| {label} | {c['conv']:,} | {c['product']:,} | {c['other']:,} | {c['total']:,} |")
    return "\n".join(lines)
