"""Random-weight float64 MACE models with every registered backend, saved and exported
for LAMMPS once per test process (shared by test_lammps.py and test_lammps_wrapper.py)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch

import mace_gaunt_plugin as mgp
from lammps_interface import export_model
from mace_gaunt_plugin.testing import default_dtype, small_mace_config

Z_MODEL = (1, 6, 7, 8, 29)  # 3BPA's H, C, N, O and Cu
R_MAX = 5.0


@functools.lru_cache(maxsize=None)
def _root() -> Path:
    root = tempfile.mkdtemp(prefix="mgp_lammps_models_")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return Path(root)


#: model sizes: "standard" for the exactness tests, "tiny" (Cu only, r_max 4, 4 channels,
#: max_ell 2, correlation 2) for the 1000-step NVE runs, "tiny_r3" for the one on two ranks
CONFIGS = {
    "standard": dict(atomic_numbers=Z_MODEL, r_max=R_MAX, hidden_irreps="8x0e + 8x1o"),
    "tiny": dict(atomic_numbers=(29,), r_max=4.0, hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=2,
                 radial_MLP=[8, 8], MLP_irreps="4x0e", atomic_energies=[-3.7]),
    # "tiny" with r_max 3 (the 12 nearest Cu neighbours): a 6 A receptive field, for NVE on two ranks
    "tiny_r3": dict(atomic_numbers=(29,), r_max=3.0, hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=2,
                    radial_MLP=[8, 8], MLP_irreps="4x0e", atomic_energies=[-3.7]),
    # "tiny_r3" with O and Cu: first-layer messages depend on the sender (the fake-rank pruning test)
    "tiny_r3_cuo": dict(atomic_numbers=(8, 29), r_max=3.0, hidden_irreps="4x0e + 4x1o", max_ell=2, correlation=2,
                        radial_MLP=[8, 8], MLP_irreps="4x0e", atomic_energies=[-2.1, -3.7]),
}


@functools.lru_cache(maxsize=None)
def exported_model(backend: str, size: str = "standard", engine: str = "torchscript") -> tuple[Path, Path]:
    """(eager .model path, exported LAMMPS file) for ``backend``, a size of CONFIGS and an
    export engine."""
    from e3nn import o3

    with default_dtype(torch.float64):
        torch.manual_seed(0)
        cfg = small_mace_config(**CONFIGS[size])
        cfg["MLP_irreps"] = o3.Irreps(str(cfg["MLP_irreps"]))
        model = mgp.build_model(backend, **cfg)
    path = _root() / f"{backend}_{size}.model"
    torch.save(model, path)
    return path, Path(export_model(str(path), str(_root() / f"{backend}_{size}_{engine}.mliap"), engine=engine))
