"""The GPU script (``benchmarks/gpu/run_all.sh``) on CPU: its dry run, and the rule that
says which kernel ``kernel=auto`` should take once a GPU has timed both."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu" / "run_all.sh"


def _auto_kernel():
    spec = importlib.util.spec_from_file_location("_auto_kernel", REPO / "benchmarks" / "gpu" / "auto_kernel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AK = _auto_kernel()


def _result(torch_ms: list[float], triton: list) -> dict:
    cases = []
    for i, (t, tr) in enumerate(zip(torch_ms, triton)):
        res = {"e3nn": {"train": {"median_ms": 100.0}}, AK.TORCH: {"train": {"median_ms": t, "peak_gb": 1.0}}}
        res[AK.TRITON] = {"error": tr} if isinstance(tr, str) else {"train": {"median_ms": tr, "peak_gb": 0.9}}
        cases.append({"L": i + 1, "channels": 128, "atoms": 2048, "results": res})
    return {"device": "cuda", "cases": cases}


def test_auto_kernel_takes_triton_only_when_it_passed_and_won_everywhere() -> None:
    assert AK.verdict(_result([10.0, 20.0], [8.0, 15.0]), True)[0] == "triton"
    assert AK.verdict(_result([10.0, 20.0], [8.0, 25.0]), True)[0] == "torch"  # slower at L = 2
    assert AK.verdict(_result([10.0, 20.0], [8.0, "RuntimeError: PTX"]), True)[0] == "torch"
    assert AK.verdict(_result([10.0, 20.0], [8.0, 15.0]), False)[0] == "torch"  # its CUDA tests failed
    assert AK.verdict(_result([10.0, 20.0], [8.0, 15.0]), None)[0] == "torch"  # or did not run
    assert AK.verdict(dict(_result([10.0], [8.0]), device="cpu"), True)[0] == "torch"
    assert AK.verdict(None, True)[0] == "torch"


def test_auto_kernel_reads_pytest_summaries() -> None:
    assert AK.tests_passed("...\n4 passed in 3.1s\n") is True
    assert AK.tests_passed("...\n1 failed, 3 passed in 3.1s\n") is False
    assert AK.tests_passed("...\n3 passed, 1 error in 3.1s\n") is False
    assert AK.tests_passed("...\n4 skipped, 173 deselected in 0.2s\n") is None
    assert AK.tests_passed(None) is None


def _dry_run(tmp_path: Path, python: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, OUT=str(tmp_path), PYTHON=python, OMP_NUM_THREADS="1", **env)
    return subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=full, timeout=timeout)


def test_run_all_refuses_unknown_arguments() -> None:
    run = subprocess.run(["bash", str(SCRIPT), "--dryrun"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "unknown argument" in run.stderr


def test_dry_run_catches_a_typo(tmp_path, python) -> None:
    run = _dry_run(tmp_path, python, 300, MGP_GPU_STAGES="lammps", MGP_GPU_LAMMPS_ENGINES="torchscript eagre")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert "unknown engine(s) ['eagre']" in run.stdout + run.stderr and "dry run: FAILED" in run.stdout


@pytest.mark.slow
def test_dry_run_of_every_stage(tmp_path, python) -> None:
    """Every stage's commands with one tiny case on CPU (about 3 minutes on one core)."""
    run = _dry_run(tmp_path, python, 1500, MGP_GPU_STAGES="kernels lammps cuda sites model")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "=== dry run: every stage passed" in run.stdout
    assert "kernel=auto on CUDA should take: torch" in run.stdout  # nothing was timed on a GPU
    results = tmp_path / "results"
    for name in ("model_gpu_kernels.json", "sites_kernels_cpu.json", "sites_cpu.json", "model_gpu.json", "auto_kernel.txt"):
        assert (results / name).is_file(), name
