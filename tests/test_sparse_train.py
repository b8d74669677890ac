"""The ``sparse`` backend under the real ``mace_run_train``: a tiny model, phases of one
epoch each, and a ``--restart_latest`` across the phase-2 -> phase-3 boundary.

Run 1 trains epochs 0-1 (phases 1 and 2) and saves the training (dense) form. Run 2
resumes from run 1's last checkpoint (epoch 1, phase 2), crosses into phase 3 at epoch
2 and saves the compact form. Checked: the logs name the phases and kept paths; the
compact NAME.model has fewer parameters than run 1's dense one; it equals run 1's model
loaded with run 2's last checkpoint (the function before compaction); NAME.model and
NAME_compiled.model give those energies in a fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends import sparse_backend as sb
from mace_gaunt_plugin.backends._sparse_cg import CompactCGConv, SparseCGConv
from mace_gaunt_plugin.testing import atoms_to_batch, default_dtype, model_energy_forces

pytestmark = pytest.mark.slow

OPTIONS = ["--tp-option", "sparsity=0.5", "--tp-option", "random_epochs=1", "--tp-option", "gated_epochs=1"]


def _command(workdir: Path, train_file: Path, epochs: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "mace_run_train"),
        "--name", "sp",
        "--work_dir", str(workdir),
        "--train_file", str(train_file),
        "--valid_fraction", "0.2",
        "--energy_key", "energy",
        "--forces_key", "forces",
        "--E0s", "average",
        "--model", "MACE",
        "--num_channels", "4",
        "--max_L", "1",
        "--max_ell", "2",
        "--correlation", "2",
        "--num_interactions", "2",
        "--r_max", "4.0",
        "--batch_size", "4",
        "--valid_batch_size", "4",
        "--max_num_epochs", str(epochs),
        "--lr", "0.01",
        "--default_dtype", "float64",
        "--device", "cpu",
        "--seed", "1",
        "--save_all_checkpoints",  # the last epoch's checkpoint is the one run_train saves
        "--tp-backend", "sparse",
        *OPTIONS,
    ]  # fmt: skip


def _run(command: list[str], cwd: Path) -> str:
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        pytest.fail(f"mace_run_train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


FRESH = textwrap.dedent(
    """
    import json, sys
    import torch
    import mace  # sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    from mace_gaunt_plugin.backends import sparse_backend as sb
    torch.set_default_dtype(torch.float64)
    batch = torch.load(sys.argv[1], weights_only=False)
    out = {}
    for path in sys.argv[2:]:
        model = torch.jit.load(path) if path.endswith("_compiled.model") else torch.load(path, weights_only=False)
        out[path] = {"energy": model(dict(batch), training=False)["energy"].tolist(), "kept": sb.kept_paths(model)}
    print(json.dumps(out))
    """
)


def _energies(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    model.eval()
    return model_energy_forces(model, batch)[0].detach()


def test_mace_run_train_crosses_all_phases_and_saves_compact(tmp_path, data_3bpa, python) -> None:
    import ase.io

    frames = ase.io.read(data_3bpa / "train_300K.xyz", ":10")
    train_file = tmp_path / "train.xyz"
    ase.io.write(train_file, frames)
    workdir = tmp_path / "run"

    log1 = _run(_command(workdir, train_file, epochs=2), tmp_path)
    dense_path = tmp_path / "dense.model"
    (workdir / "sp.model").rename(dense_path)
    log2 = _run(_command(workdir, train_file, epochs=4) + ["--restart_latest"], tmp_path)

    logs = log1 + log2 + "".join(p.read_text() for p in (workdir / "logs").glob("*.log"))
    assert "epoch 0, phase 1; random path subsets every training step (2 of 3, 4 of 7 paths per layer)" in logs
    for epoch, phase in ((1, 2), (2, 3)):
        assert f"epoch {epoch}, phase {phase}; paths used now: layer 0:" in logs, f"phase {phase} not logged"
    assert "saving the compact model" in logs

    dense = torch.load(dense_path, weights_only=False)
    small = torch.load(workdir / "sp.model", weights_only=False)
    assert all(isinstance(b.conv_tp, SparseCGConv) and b.conv_tp.phase_now == 2 for b in dense.interactions)
    assert all(isinstance(b.conv_tp, CompactCGConv) for b in small.interactions)
    assert sb.parameter_count(small) < sb.parameter_count(dense)
    kept = sb.kept_paths(small)
    assert [len(layer) for layer in kept] == [b.conv_tp.n_keep for b in dense.interactions]

    # The compact model computes what the trained model computed: run 1's model with run
    # 2's last checkpoint (phase 3, training form; loaded as MACE does, strict=False).
    checkpoints = sorted((workdir / "checkpoints").glob("sp_run-1_epoch-*.pt"), key=lambda p: int(p.stem.split("-")[-1]))
    assert checkpoints[-1].stem.endswith("epoch-3")
    state = mgp.read_checkpoint(checkpoints[-1])["model"]
    missing, unexpected = dense.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    assert sb.kept_paths(dense) == kept

    with default_dtype(torch.float64):
        batch = atoms_to_batch(ase.io.read(data_3bpa / "train_mixedT.xyz", "0:3"), [1, 6, 7, 8], 4.0)
    e_small = _energies(small, batch)
    torch.testing.assert_close(e_small, _energies(dense, batch), rtol=0, atol=1e-10)

    torch.save(batch, tmp_path / "batch.pt")
    files = [str(workdir / "sp.model"), str(workdir / "sp_compiled.model")]
    proc = subprocess.run([python, "-c", FRESH, str(tmp_path / "batch.pt"), *files], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads(proc.stdout.strip().splitlines()[-1])
    for path in files:
        torch.testing.assert_close(torch.tensor(fresh[path]["energy"], dtype=torch.float64), e_small, rtol=0, atol=1e-10)
        assert [[tuple(p) for p in layer] for layer in fresh[path]["kept"]] == kept
