"""The backend logic shared by the Gaunt family (``grid``, ``gaunt``): options, refusals,
conv output layout and site construction. A concrete backend only supplies its sphere
engine (see :mod:`._sphere_sites`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch
from e3nn import o3

from ..errors import BackendOptionError, UnsupportedIrrepsError
from ._conv_triton import triton_unavailable_reason
from ._sphere_sites import (
    CONV_KERNELS,
    CONV_WEIGHTS,
    PER_PATH_OUTPUTS,
    PRODUCT_BASES,
    EngineSpec,
    SphereConv,
    SphereProduct,
    conv_degrees_out,
    mace_conv_paths,
)
from .base import Option, TPBackend, parse_bool, require_natural_parity, require_uniform_multiplicity

__all__ = ["SphereBackend", "sphere_options"]

SITE_CHOICES = ("both", "conv", "product")


def sphere_options() -> tuple[Option, ...]:
    """The options every Gaunt-family backend takes."""
    return (
        Option("sites", "both", "which MACE sites use the Gaunt product: both, conv or product (the other stays e3nn)", str, SITE_CHOICES),
        Option(
            "conv_weights",
            "l2",
            "conv weights per (channel, l2) ('l2', Luo et al., fastest), per (channel, l1, l2) ('l1l2', richer), per "
            "(channel, l1, l2, l3) path ('path': MACE's own conv function, output irreps and weight layout; slowest) or "
            "'node_path' (l1l2 radial weights, MACE's per-path outputs: per-path weights applied at the node by the "
            "linear after the conv; between l1l2 and path)",
            str,
            CONV_WEIGHTS,
        ),
        Option("fused", True, "conv gathers from senders and sums onto receivers itself (per-node evaluation and projection)", parse_bool),
        Option(
            "kernel",
            "auto",
            "conv kernel: 'torch' (quadrilinear primitives, edge-chunked, no [E, C, P] tensor kept for the backward), "
            "'triton' (the same primitives as Triton kernels, CUDA), 'reference' (plain PyTorch ops differentiated by "
            "autograd; more memory), 'auto' (torch everywhere until a GPU run has timed triton; see AUTO_CUDA_KERNEL)",
            str,
            CONV_KERNELS,
        ),
        Option(
            "product_basis",
            "power",
            "many-body product basis: 'power' (Proj_L(f**nu), Luo et al.) or 'factors' (products of nu differently "
            "reweighted copies of A: per element, channel and degree weights for every factor; more couplings, "
            "correlation*(correlation+1)/2 - 1 evaluations on the points instead of 1) or 'cp' (a CP-rank-R symmetric "
            "contraction: per nu >= 2, a weighted sum of product_rank such products; R times factors' evaluations)",
            str,
            PRODUCT_BASES,
        ),
        Option(
            "product_rank",
            4,
            "product_basis=cp: R, the number of products per correlation order nu >= 2 (ignored by power and factors)",
            _positive_int,
        ),
    )


def _positive_int(value: Any) -> int:
    """A positive int from an int or a command-line string (``"4"``; not ``4.5`` or ``True``)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("must be a positive integer")
    out = int(value)
    if out < 1:
        raise ValueError("must be a positive integer")
    return out


def _uses(options: Mapping[str, Any], site: str) -> bool:
    return options["sites"] in ("both", site)


@dataclass
class SphereBackend(TPBackend):
    """A Gaunt-family backend: ``engine_factory(EngineSpec) -> engine`` says how products
    on the sphere are computed; everything else is shared."""

    engine_factory: Optional[Callable[[EngineSpec], torch.nn.Module]] = None

    def check_device(self, options: Mapping[str, Any], device: str) -> None:
        """``kernel=triton`` needs Triton and CUDA tensors (or Triton's interpreter)."""
        if options.get("kernel") != "triton" or not _uses(options, "conv"):
            return
        why = triton_unavailable_reason()
        if why is None and not str(device).startswith("cuda") and os.environ.get("TRITON_INTERPRET") != "1":
            why = f"the run's --device is {device!r}, and the Triton kernels run on CUDA tensors only"
        if why is not None:
            raise BackendOptionError(
                f"TP backend {self.name!r}: kernel='triton' cannot run here: {why}. Use --tp-option kernel=torch "
                "(or leave kernel=auto, which takes the fastest kernel available on the device)"
            )

    def engine_for(self, options: Mapping[str, Any]) -> Callable[[EngineSpec], torch.nn.Module]:
        """The engine factory for these options (override to pass engine options on)."""
        if self.engine_factory is None:
            raise TypeError(f"SphereBackend {self.name!r} has no engine_factory")
        return self.engine_factory

    def function_family_of(self, options: Mapping[str, Any]) -> str:
        """``"cg"`` (stock MACE's function class) for ``sites=conv, conv_weights=path``: the
        conv is MACE's and the product stays e3nn's. Otherwise :attr:`function_family`."""
        if options.get("sites") == "conv" and options.get("conv_weights") == "path":
            return "cg"
        return self.function_family

    def conv_irreps_out(
        self, irreps_node: o3.Irreps, irreps_edge: o3.Irreps, irreps_target: o3.Irreps, options: Mapping[str, Any]
    ) -> Optional[o3.Irreps]:
        if not _uses(options, "conv"):
            return None
        require_natural_parity(self.name, irreps_node, "node features (hidden irreps)")
        require_natural_parity(self.name, irreps_edge, "edge spherical harmonics")
        require_natural_parity(self.name, irreps_target, "interaction target irreps")
        mul = require_uniform_multiplicity(self.name, irreps_node, "node features (hidden irreps)")
        if options["conv_weights"] in PER_PATH_OUTPUTS:
            return self._mace_irreps_mid(irreps_node, irreps_edge, irreps_target)
        ls = conv_degrees_out([ir.l for _, ir in irreps_node], [ir.l for _, ir in irreps_edge], [ir.l for _, ir in irreps_target])
        if not ls:
            raise UnsupportedIrrepsError(self.name, str(irreps_target), f"no target degree is reachable from {irreps_node} x {irreps_edge}")
        return o3.Irreps([(mul, (l, (-1) ** l)) for l in ls])

    def _mace_irreps_mid(self, irreps_node: o3.Irreps, irreps_edge: o3.Irreps, irreps_target: o3.Irreps) -> o3.Irreps:
        """``conv_weights="path"`` or ``"node_path"``: MACE's own conv output irreps (``irreps_mid``), checked."""
        from mace.modules.irreps_tools import tp_out_irreps_with_instructions

        mid, _ = tp_out_irreps_with_instructions(irreps_node, irreps_edge, irreps_target)
        if len(mid) == 0:
            raise UnsupportedIrrepsError(self.name, str(irreps_target), f"no target irrep is reachable from {irreps_node} x {irreps_edge}")
        require_natural_parity(self.name, mid, "conv outputs")
        mace_conv_paths(self.name, irreps_node, irreps_edge, mid)  # refuses what the conv cannot build
        return mid

    def build_conv(
        self,
        irreps_node: o3.Irreps,
        irreps_edge: o3.Irreps,
        irreps_out: o3.Irreps,
        instructions: Optional[list],
        options: Mapping[str, Any],
    ) -> Optional[torch.nn.Module]:
        if not _uses(options, "conv"):
            return None
        return SphereConv(irreps_node, irreps_edge, irreps_out, self.engine_for(options), self.name, options)

    def build_product(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        correlation: int,
        num_elements: int,
        options: Mapping[str, Any],
    ) -> Optional[torch.nn.Module]:
        if not _uses(options, "product"):
            return None
        return SphereProduct(irreps_in, irreps_out, correlation, num_elements, self.engine_for(options), self.name, options)

    def check_model_config(self, options: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        if config.get("use_so3", False):
            raise UnsupportedIrrepsError(
                self.name,
                f"spherical_harmonics(max_ell={config.get('max_ell')}, p=1)",
                "use_so3=True gives even-parity edge harmonics, which are not functions on the sphere's "
                "natural-parity basis that a Gaunt product needs",
                "Build the model with use_so3=False (MACE's default), or use the 'e3nn' backend.",
            )
        for key in ("hidden_irreps", "edge_irreps"):
            irreps = config.get(key)
            if irreps is None:
                continue
            irreps = o3.Irreps(irreps)
            require_natural_parity(self.name, irreps, key.replace("_", " "))
            require_uniform_multiplicity(self.name, irreps, key.replace("_", " "))
