"""The README's main job, ``examples/train_3bpa.py``, end to end at a tiny size."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_train_3bpa_example_runs_end_to_end(data_3bpa: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, str(REPO / "examples" / "train_3bpa.py"), "--data", str(data_3bpa), "--workdir", str(tmp_path),
           "--epochs", "1", "--num-train", "20", "--num-test", "5", "--md-steps", "5", "--channels", "8"]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="default")  # our example must not trigger warnings of its own
    env.pop("MACE_GAUNT_PLUGIN_DISABLE", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "held out 5 as the test set" in out and "--tp-backend grid" in out
    assert "[test] " in out and "TP backend 'grid'" in out and "force RMSE" in out
    assert "[md] Langevin 300 K" in out and "[md] NVE" in out and "steps/s" in out
    assert (tmp_path / "bpa.model").is_file() and (tmp_path / "bpa_compiled.model").is_file()
    both = proc.stdout + proc.stderr
    assert "is no longer safe" not in both  # MACE's energy_key/forces_key warnings: the example uses REF_ keys
    assert not re.search(r"train_3bpa\.py:\d+: \w*Warning", both), both[-3000:]  # e.g. ASE deprecations
    assert "fixcm" not in both
