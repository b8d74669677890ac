"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import mace  # noqa: F401  (sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD before e3nn is imported)

REPO = Path(__file__).resolve().parents[1]
DATA_3BPA = Path(os.environ.get("MACE_GAUNT_3BPA", REPO.parent / "shared" / "data" / "3bpa"))


@pytest.fixture(scope="session")
def data_3bpa() -> Path:
    if not (DATA_3BPA / "train_300K.xyz").exists():
        pytest.fail(f"3BPA data not found at {DATA_3BPA}; set MACE_GAUNT_3BPA")
    return DATA_3BPA


@pytest.fixture(scope="session")
def bpa_atoms(data_3bpa: Path) -> list:
    import ase.io

    return ase.io.read(data_3bpa / "train_300K.xyz", ":3")


@pytest.fixture
def float64():
    import torch

    from mace_gaunt_plugin.testing import default_dtype

    with default_dtype(torch.float64) as dtype:
        yield dtype


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture
def one_thread():
    """One torch thread: tests of many tiny GEMMs/FFTs run much faster without thread
    contention on a busy 2-core machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
