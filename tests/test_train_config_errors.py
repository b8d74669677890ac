"""Configuration errors that no backend can build stop the real ``mace_run_train`` before
anything is written, with the fix in the message (and ``build_model`` refuses them too)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train_cli import MACE_RUN_TRAIN, _files, _run, _train_args, tiny_xyz  # noqa: F401  (tiny_xyz: fixture)

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.errors import UnsupportedIrrepsError
from mace_gaunt_plugin.testing import small_mace_config


@pytest.mark.parametrize("backend", ["grid", "gaunt"])
def test_max_ell_0_stops_before_anything_is_written(backend: str, tiny_xyz: Path, tmp_path: Path) -> None:  # noqa: F811
    before = _files(tmp_path)
    args = _train_args(tmp_path, tiny_xyz, "--tp-backend", backend)
    args[args.index("--max_ell") + 1] = "0"
    proc = _run([MACE_RUN_TRAIN, *args])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "mace_run_train: error:" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "max_ell=0" in proc.stderr and "Use --max_ell 1 or more" in proc.stderr, proc.stderr
    assert _files(tmp_path) == before


def test_build_model_refuses_max_ell_0_with_vector_features() -> None:
    cfg = small_mace_config(max_ell=0, hidden_irreps="4x0e + 4x1o", correlation=3)
    for backend in ("grid", "e3nn"):
        with pytest.raises(UnsupportedIrrepsError, match=r"reach degree 0 only, below the hidden irreps' degree 1\. Use --max_ell 1"):
            mgp.build_model(backend, **cfg)
    mgp.build_model("grid", **small_mace_config(max_ell=1, hidden_irreps="4x0e + 4x1o", correlation=3, num_interactions=1))
