"""A tiny third-party TP backend, installed as its own distribution (dist-info with
entry_points.txt) in a temporary folder: the registry and training tests use it."""

from __future__ import annotations

from pathlib import Path

TOY_BACKEND_SOURCE = '''
import json, os
from typing import Optional
import torch
from e3nn import o3
from mace_gaunt_plugin.backends.base import BackendModule, Option, TPBackend


class ToyConv(BackendModule):
    """e3nn's CG conv wrapped as a third-party plugin module."""

    def __init__(self, irreps_in1, irreps_in2, irreps_out, instructions, options):
        super().__init__("toy", "conv", options)
        self.tp = o3.TensorProduct(irreps_in1, irreps_in2, irreps_out, instructions,
                                   shared_weights=False, internal_weights=False)
        self.irreps_in1, self.irreps_in2, self.irreps_out = irreps_in1, irreps_in2, irreps_out
        self.weight_numel = self.tp.weight_numel
        self.fused = False

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor,
                edge_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.tp(x1, x2, weight)


class ToyBackend(TPBackend):
    def build_conv(self, irreps_node, irreps_edge, irreps_out, instructions, options):
        return ToyConv(irreps_node, irreps_edge, irreps_out, instructions, options)

    def on_epoch_start(self, model, epoch, steps_per_epoch):
        with open(os.environ["TOY_HOOK_LOG"], "a") as f:
            f.write(json.dumps({"epoch": epoch, "steps": steps_per_epoch,
                                "convs": sum(isinstance(m, ToyConv) for m in model.modules())}) + "\\n")

    def before_save(self, model):
        model.toy_before_save_ran = True
        return model


TOY = ToyBackend(name="toy", description="third-party test backend", options=(Option("flavour", "plain", "unused"),),
                 function_family="cg")
'''


def write_distribution(root: Path, dist: str, modules: dict[str, str], entry_points: str) -> Path:
    """Install-free distribution ``dist`` 0.1 in ``root`` (created if missing): the
    ``modules`` (name -> source) and a dist-info whose entry_points.txt holds
    ``entry_points``; put ``root`` on ``sys.path``/``PYTHONPATH`` to install it."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(source)
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return root


def make_toy_distribution(root: Path, extra_entry_points: str = "") -> Path:
    """Write ``toy_backend.py`` and ``toy_mace_backend-0.1.dist-info`` into ``root``
    (created if missing); put ``root`` on ``sys.path``/``PYTHONPATH`` to install it."""
    return write_distribution(
        root, "toy-mace-backend", {"toy_backend": TOY_BACKEND_SOURCE},
        "[mace_gaunt_plugin.backends]\ntoy = toy_backend:TOY\n" + extra_entry_points,
    )  # fmt: skip
