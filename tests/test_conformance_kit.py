"""The conformance kit for backend authors: the README's example backend, installed as a
temporary third-party distribution, passes ``check_backend`` in a fresh process; the same
backend registered in-process; and the kit reports a broken backend's failures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest
import torch
from _readme_backend import README_BACKEND_SOURCE, README_ENTRY_POINTS
from _toy_backend import write_distribution

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends.base import BackendModule, TPBackend
from mace_gaunt_plugin.errors import BackendError, UnknownBackendError
from mace_gaunt_plugin.registry import register_backend
from mace_gaunt_plugin.testing import CHECKS, BackendCheckError, check_backend

SKIPPED = {"switch": "skipped: the backend declares no function_family"}


def test_readme_backend_in_a_temporary_distribution_passes_check_backend(tmp_path: Path) -> None:
    write_distribution(tmp_path, "my-mace-backend", {"my_mace_backend": README_BACKEND_SOURCE}, README_ENTRY_POINTS)
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from mace_gaunt_plugin.testing import check_backend
        print(json.dumps(check_backend("scaled", {{"scale": "0.5"}})))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == {c: SKIPPED.get(c, "passed") for c in CHECKS}, results


def _readme_module(tmp_path: Path):
    write_distribution(tmp_path, "unused", {"my_mace_backend": README_BACKEND_SOURCE}, "")
    sys.path.insert(0, str(tmp_path))
    try:
        import my_mace_backend
    finally:
        sys.path.remove(str(tmp_path))
    return my_mace_backend


def test_register_backend_in_process(tmp_path: Path) -> None:
    module = _readme_module(tmp_path)
    assert "scaled" not in mgp.available_backends()
    with register_backend(module.SCALED) as backend:
        assert backend is module.SCALED and mgp.get_backend("scaled") is backend
        with pytest.raises(BackendError, match="'scaled' is registered already"):
            register_backend(module.SCALED)
        results = check_backend("scaled", checks=("o3", "pickle", "empty"), dtypes=(torch.float64,))
        assert results == {"o3": "passed", "pickle": "passed", "empty": "passed"}
    assert "scaled" not in mgp.available_backends()
    with pytest.raises(UnknownBackendError):
        check_backend("scaled")
    with pytest.raises(BackendError, match="'grid' is registered already \\(by an installed entry point\\)"):
        register_backend(TPBackend(name="grid"))
    registration = register_backend(module.SCALED)  # the function form
    try:
        assert "scaled" in mgp.available_backends()
    finally:
        registration.close()
    assert "scaled" not in mgp.available_backends()


class _Leaky(BackendModule):
    """Breaks invariance on purpose: adds the raw edge vectors' x components."""

    fused: bool
    weight_numel: int

    def __init__(self, irreps_in1, irreps_in2, irreps_out, instructions, options) -> None:
        from e3nn import o3

        super().__init__("leaky", "conv", options)
        self.irreps_in1, self.irreps_in2, self.irreps_out = irreps_in1, irreps_in2, irreps_out
        self.tp = o3.TensorProduct(irreps_in1, irreps_in2, irreps_out, instructions, shared_weights=False, internal_weights=False)
        self.weight_numel = self.tp.weight_numel
        self.fused = False

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, edge_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.tp(x1, x2, weight) + x2[:, 1:2]  # the l=1 'y' component, added to every output


class _LeakyBackend(TPBackend):
    def build_conv(self, irreps_node, irreps_edge, irreps_out, instructions, options):
        return _Leaky(irreps_node, irreps_edge, irreps_out, instructions, options)


def test_kit_reports_what_a_broken_backend_gets_wrong() -> None:
    with register_backend(_LeakyBackend(name="leaky")):
        with pytest.raises(BackendCheckError) as info:
            check_backend("leaky", checks=("o3", "translation", "permutation"), dtypes=(torch.float64,))
    err = info.value
    assert set(err.failures) == {"o3[float64]"}, err.failures  # shifts and permutations keep edge vectors
    assert "energy not invariant under a rotation" in err.failures["o3[float64]"]
    assert err.results == {"o3": "failed", "translation": "passed", "permutation": "passed"}
    with pytest.raises(ValueError, match="unknown check"):
        check_backend("e3nn", checks=("nope",))
