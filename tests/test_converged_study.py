"""The converged study's driver end to end (``bench_accuracy.py --until-converged``, a tiny
model on 20 3BPA configurations): chunked training with MACE restarts, a stop file that ends
a session between chunks, stage two, and a study that refuses to mix protocols. About a
minute on one core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _command(out: Path, work: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, str(BENCH / "bench_accuracy.py"), "--until-converged", "--preset", "tiny", "--backends", "grid",
            "--seeds", "1", "--max-epochs", "5", "--out", str(out), "--work-dir", str(work), "--data", str(data), *extra]  # fmt: skip


def _study(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args, **kwargs), capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)


def _study_stopped_in_its_first_chunk(out: Path, work: Path, data: Path) -> tuple[int, str]:
    """Run the study and create its stop file while the first chunk trains: (rc, stdout)."""
    stop = work / "STOP"
    proc = subprocess.Popen(_command(out, work, data, "--chunk-epochs", "2"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "--max_num_epochs" in line:
            stop.touch()
    return proc.wait(timeout=600), "".join(lines)


def test_study_trains_in_chunks_stops_and_resumes(tmp_path: Path, data_3bpa: Path) -> None:
    sys.path.insert(0, str(BENCH))
    import _converged

    out, work = tmp_path / "study", tmp_path / "work"
    rc, first = _study_stopped_in_its_first_chunk(out, work, data_3bpa)
    assert rc == 0 and "grid_L1_seed1: stopped before its next chunk" in first, first[-3000:]
    state = json.loads((out / "checkpoints" / "grid_L1_seed1" / "state.json").read_text())
    assert state["stage"] == 1 and state["epochs"] == 2 and not (out / "runs").exists()

    done = _study(out, work, data_3bpa, "--chunk-epochs", "2")  # resumes; the old stop file is removed
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    calls = [line for line in first.splitlines() + done.stdout.splitlines() if "--max_num_epochs" in line]
    stage_one_calls = [line for line in calls if "stage two" not in line]
    assert len(stage_one_calls) >= 3 and any("stage two" in line for line in calls)

    run = json.loads((out / "runs" / "grid_L1_seed1.json").read_text())
    assert run["stage_one_epochs"] == 5 and run["stage_two_epochs"] == 2 and not run["converged"]  # the cap, not the rule
    assert len(run["curve"]["valid_rmse_f"]) == 7
    # the lr read from the last stage-one checkpoint is a whole number of ReduceLROnPlateau steps
    recipe = _converged.RECIPE
    assert run["lr"] == pytest.approx(recipe["lr"] * recipe["lr_factor"] ** run["lr_reductions"], rel=1e-9)
    (swa,) = (work / "grid_L1_seed1" / "checkpoints").glob("*_swa.pt")  # stage two's last checkpoint
    groups = _converged._read(swa)["optimizer"]["param_groups"]
    assert {g["swa_lr"] for g in groups} == {recipe["stage_two"]["lr"]}
    assert not (out / "checkpoints" / "grid_L1_seed1").exists()  # a finished run's committed checkpoint is gone
    study = json.loads((out / "study.json").read_text())
    assert study["recipe"] == json.loads(json.dumps(_converged.RECIPE)) and study["chunk"] == 2
    assert (out / "table.md").read_text() == _converged.render_markdown(_converged.load_dir(out))

    again = _study(out, work, data_3bpa, "--chunk-epochs", "2")
    assert again.returncode == 0 and "grid_L1_seed1: already finished" in again.stdout
    other = _study(out, work, data_3bpa, "--chunk-epochs", "3")
    assert other.returncode != 0 and "trained with another chunk" in other.stderr
