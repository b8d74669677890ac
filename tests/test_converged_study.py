"""The converged study's driver end to end (``bench_accuracy.py --until-converged``, a tiny
model on 20 3BPA configurations): chunked training with MACE restarts, the annealed learning
rate carried across them, stage two at stage one's final lr, and a study that refuses to mix
protocols. About a minute on one core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _study(out: Path, work: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(BENCH / "bench_accuracy.py"), "--until-converged", "--preset", "tiny", "--backends", "grid",
           "--seeds", "1", "--max-epochs", "5", "--out", str(out), "--work-dir", str(work), "--data", str(data), *extra]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_study_trains_in_chunks_anneals_the_lr_and_resumes(tmp_path: Path, data_3bpa: Path) -> None:
    sys.path.insert(0, str(BENCH))
    import _converged

    out, work = tmp_path / "study", tmp_path / "work"
    done = _study(out, work, data_3bpa, "--chunk-epochs", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    calls = [line for line in done.stdout.splitlines() if "--max_num_epochs" in line]
    stage_one_calls = [line for line in calls if "stage two" not in line]
    assert len(stage_one_calls) >= 3 and any("stage two" in line for line in calls)

    run = json.loads((out / "runs" / "grid_L1_seed1.json").read_text())
    assert run["stage_one_epochs"] == 5 and run["stage_two_epochs"] == 2 and not run["converged"]  # the cap, not the rule
    assert len(run["curve"]["valid_rmse_f"]) == 7
    # ExponentialLR steps once per epoch except the first of each mace_run_train call: the lr
    # was carried across the restarts, not reset, and stage two kept it
    gamma = _converged.RECIPE["lr_scheduler_gamma"]
    assert run["lr"] == pytest.approx(_converged.RECIPE["lr"] * gamma ** (5 - len(stage_one_calls)), rel=1e-9)
    assert run["swa_lr"] == run["lr"]
    assert not (out / "checkpoints" / "grid_L1_seed1").exists()  # a finished run's committed checkpoint is gone
    study = json.loads((out / "study.json").read_text())
    assert study["recipe"] == json.loads(json.dumps(_converged.RECIPE)) and study["chunk"] == 2
    assert (out / "table.md").read_text() == _converged.render_markdown(_converged.load_dir(out))

    again = _study(out, work, data_3bpa, "--chunk-epochs", "2")
    assert again.returncode == 0 and "grid_L1_seed1: already finished" in again.stdout
    other = _study(out, work, data_3bpa, "--chunk-epochs", "3")
    assert other.returncode != 0 and "trained with another chunk" in other.stderr
