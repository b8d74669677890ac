"""The example backend of README's "Writing a backend", verbatim: the test that runs
check_backend on it (tests/test_conformance_kit.py) installs it as its own distribution."""

README_BACKEND_SOURCE = '''\
# my_mace_backend.py: no "from __future__ import annotations" here (it breaks TorchScript)
from typing import Optional

import torch
from e3nn import o3

from mace_gaunt_plugin.backends.base import BackendModule, Option, TPBackend


class ScaledConv(BackendModule):
    """MACE's conv (e3nn's CG tensor product), times a constant."""

    fused: bool
    weight_numel: int
    scale: float

    def __init__(self, irreps_in1, irreps_in2, irreps_out, instructions, options):
        super().__init__("scaled", "conv", options)  # this backend's name, the site
        if instructions is None:  # e.g. switch_backend rebuilding from irreps alone
            raise ValueError("the 'scaled' conv needs MACE's tensor-product instructions")
        self.irreps_in1, self.irreps_in2, self.irreps_out = irreps_in1, irreps_in2, irreps_out
        self.tp = o3.TensorProduct(irreps_in1, irreps_in2, irreps_out, instructions,
                                   shared_weights=False, internal_weights=False)
        self.weight_numel = self.tp.weight_numel
        self.fused = False  # MACE gathers from senders and sums onto receivers
        self.scale = float(options["scale"])

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor,
                edge_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.tp(x1, x2, weight) * self.scale


class ScaledBackend(TPBackend):
    def build_conv(self, irreps_node, irreps_edge, irreps_out, instructions, options):
        return ScaledConv(irreps_node, irreps_edge, irreps_out, instructions, options)
    # build_product is not overridden: MACE's symmetric contraction stays


SCALED = ScaledBackend(
    name="scaled",
    description="MACE's conv times a constant (README example)",
    options=(Option("scale", 1.0, "factor on every message", float),),
)
'''

README_ENTRY_POINTS = """\
[mace_gaunt_plugin.backends]
scaled = my_mace_backend:SCALED
"""
