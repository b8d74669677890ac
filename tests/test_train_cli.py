"""The real ``mace_run_train`` console script with ``--tp-backend``, in subprocesses:
what it writes (log, checkpoints, NAME.model, NAME_compiled.model), fresh-process loading,
``mace_eval_configs``, the ASE calculator, ``--restart_latest``, refusals of bad input with
nothing written, a model whose backend package is missing, the start-up hook, ``--help``
and CPU ``--distributed``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _toy_backend import make_toy_distribution

BACKEND = "grid"
BIN = Path(sys.executable).parent
MACE_RUN_TRAIN = str(BIN / "mace_run_train")
REPO = Path(__file__).resolve().parents[1]

TINY_MODEL = [
    "--max_ell", "2", "--correlation", "2", "--num_interactions", "2", "--r_max", "4.0", "--radial_MLP", "[16, 16]",
]  # fmt: skip


def _train_args(workdir: Path, xyz: Path, *extra: str, epochs: int = 1, hidden: str = "8x0e + 8x1o") -> list[str]:
    return [
        "--name", "tiny", "--work_dir", str(workdir), "--train_file", str(xyz), "--valid_fraction", "0.25",
        "--E0s", "average", "--energy_key", "energy", "--forces_key", "forces", "--hidden_irreps", hidden, *TINY_MODEL,
        "--batch_size", "3", "--valid_batch_size", "6", "--max_num_epochs", str(epochs),
        "--device", "cpu", "--default_dtype", "float64", "--seed", "1", *extra,
    ]  # fmt: skip


def _run(cmd: list[str], env: dict | None = None, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    full_env.pop("MACE_GAUNT_PLUGIN_DISABLE", None)
    full_env.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, **kwargs)


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-c", textwrap.dedent(code)], env=env)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def tiny_xyz(tmp_path_factory: pytest.TempPathFactory, data_3bpa: Path) -> Path:
    import ase.io

    path = tmp_path_factory.mktemp("data") / "tiny.xyz"
    ase.io.write(path, ase.io.read(data_3bpa / "train_300K.xyz", ":12"))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_xyz: Path) -> Path:
    """One short epoch of the real console script with the grid backend."""
    workdir = tmp_path_factory.mktemp("trained")
    _ok(_run([MACE_RUN_TRAIN, *_train_args(workdir, tiny_xyz, "--tp-backend", BACKEND, "--tp-option", "conv_weights=l1l2")]))
    return workdir


LOAD_AND_EVALUATE = """
import json, sys, torch, ase.io
import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.mace._config import extract_config, model_from_config
from mace_gaunt_plugin.testing import atoms_to_batch
torch.set_default_dtype(torch.float64)
workdir, xyz = sys.argv[1], sys.argv[2]
pickled = torch.load(f"{workdir}/tiny.model", weights_only=False)
compiled = torch.jit.load(f"{workdir}/tiny_compiled.model")
checkpoint = mgp.read_checkpoint(f"{workdir}/checkpoints/tiny_run-1_epoch-0.pt")
config = extract_config(pickled)
rebuilt = model_from_config(config)
rebuilt.load_state_dict(checkpoint["model"], strict=True)
batch = atoms_to_batch(ase.io.read(xyz, ":"), [1, 6, 7, 8], 4.0)
energies = {k: m(dict(batch), compute_force=True)["energy"].tolist()
            for k, m in (("pickled", pickled), ("compiled", compiled), ("rebuilt", rebuilt))}
print(json.dumps({
    "backends": [mgp.backend_of(m) for m in (pickled, compiled, rebuilt)],
    "options": [mgp.backend_options_of(m) for m in (pickled, compiled, rebuilt)],
    "checkpoint": checkpoint.get("tp_backend"),
    "config_backend": [config.get("tp_backend"), config.get("tp_backend_options")],
    "energies": energies,
}))
"""


@pytest.fixture(scope="module")
def loaded(trained: Path, tiny_xyz: Path) -> dict:
    """NAME.model, NAME_compiled.model and a model rebuilt from the checkpoint, in a fresh process."""
    proc = _run([sys.executable, "-c", LOAD_AND_EVALUATE, str(trained), str(tiny_xyz)])
    _ok(proc)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_training_writes_the_backend_everywhere(trained: Path, loaded: dict) -> None:
    import torch

    options = {"sites": "both", "conv_weights": "l1l2", "fused": True, "kernel": "auto", "product_basis": "power", "product_rank": 4}
    log = (trained / "logs" / "tiny_run-1.log").read_text()
    assert f"TP backend: '{BACKEND}'" in log and "conv_weights=l1l2" in log
    assert "TP backend kernels on cpu: SphereConv runs 'torch'" in log  # kernel=auto, resolved on the run's device
    assert loaded["backends"] == [BACKEND] * 3
    assert loaded["options"] == [options] * 3
    assert loaded["checkpoint"]["name"] == BACKEND and loaded["checkpoint"]["options"] == options
    assert loaded["config_backend"] == [BACKEND, options]
    e = {k: torch.tensor(v) for k, v in loaded["energies"].items()}
    assert e["pickled"].shape == (12,)
    # the saved pickle, its TorchScript twin and the checkpoint weights in a freshly built model agree
    torch.testing.assert_close(e["compiled"], e["pickled"], rtol=0, atol=1e-8)
    torch.testing.assert_close(e["rebuilt"], e["pickled"], rtol=0, atol=1e-8)
    extra = {"config.yaml": ""}
    torch.jit.load(str(trained / "tiny_compiled.model"), _extra_files=extra)
    assert f'"tp_backend": "{BACKEND}"' in extra["config.yaml"].decode()


def test_mace_eval_configs_on_the_saved_model(trained: Path, tiny_xyz: Path, loaded: dict, tmp_path: Path) -> None:
    import ase.io
    import numpy as np

    out = tmp_path / "eval.xyz"
    cmd = [str(BIN / "mace_eval_configs"), "--configs", str(tiny_xyz), "--model", str(trained / "tiny.model"),
           "--output", str(out), "--device", "cpu", "--default_dtype", "float64"]  # fmt: skip
    _ok(_run(cmd))
    energies = [a.info["MACE_energy"] for a in ase.io.read(out, ":")]
    np.testing.assert_allclose(energies, loaded["energies"]["pickled"], rtol=0, atol=1e-8)
    # a safe model file: a clear refusal with what to do, no traceback (issue 24, defect 8)
    for args in (["--model", str(trained / "tiny.safetensors")], ["--model", str(trained / "tiny.safetensors"), "--device", "cpu"]):
        cmd = [str(BIN / "mace_eval_configs"), "--configs", str(tiny_xyz), "--output", str(tmp_path / "safe.xyz"), *args]
        proc = _run(cmd)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "mace_eval_configs: error:" in proc.stderr and "is a safe model file" in proc.stderr, proc.stderr
        assert "safe_calculator" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = _run([sys.executable, "-m", "mace.cli.eval_configs", "--configs", str(tiny_xyz), "--model",
                 str(trained / "tiny.safetensors"), "--output", str(tmp_path / "m.xyz")])  # fmt: skip
    assert proc.returncode == 2 and "is a safe model file" in proc.stderr, proc.stderr
    assert not (tmp_path / "safe.xyz").exists() and not (tmp_path / "m.xyz").exists()


CALCULATOR = """
import json, sys, numpy as np, ase.io, torch
from mace.calculators import MACECalculator
import mace_gaunt_plugin as mgp
model, xyz = sys.argv[1], sys.argv[2]
atoms = ase.io.read(xyz, "0")
atoms.pbc = True
atoms.cell = [11.0, 11.0, 11.0]
atoms.center()
devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
out = {}
for device in devices:
    for dtype in ("float64", "float32"):
        calc = MACECalculator(model_paths=model, device=device, default_dtype=dtype)
        a = atoms.copy()
        a.calc = calc
        out[f"{device}-{dtype}"] = {
            "backend": mgp.backend_of(calc.models[0]),
            "dtype": str(next(calc.models[0].parameters()).dtype),
            "energy": float(a.get_potential_energy()),
            "forces": a.get_forces().tolist(),
            "stress": a.get_stress().tolist(),
        }
mol = ase.io.read(xyz, "0")
mol.calc = MACECalculator(model_paths=model, device="cpu", default_dtype="float64")
out["molecule_energy"] = float(mol.get_potential_energy())
print(json.dumps(out))
"""


def test_ase_calculator_in_a_fresh_process(trained: Path, tiny_xyz: Path, loaded: dict) -> None:
    import numpy as np

    proc = _run([sys.executable, "-c", CALCULATOR, str(trained / "tiny.model"), str(tiny_xyz)])
    _ok(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out.pop("molecule_energy"), loaded["energies"]["pickled"][0], rtol=0, atol=1e-8)
    ref = out["cpu-float64"]
    for key, res in out.items():
        assert res["backend"] == BACKEND, key
        assert res["dtype"] == "torch." + key.split("-")[1], key
        forces, stress = np.array(res["forces"]), np.array(res["stress"])
        assert forces.shape == (27, 3) and stress.shape == (6,), key
        assert np.isfinite(forces).all() and np.isfinite(stress).all(), key
        tol = 1e-8 if key.endswith("float64") else 1e-5
        np.testing.assert_allclose(res["energy"], ref["energy"], rtol=1e-6 if key.endswith("float32") else 1e-10)
        np.testing.assert_allclose(forces, ref["forces"], rtol=0, atol=tol * 100)
        np.testing.assert_allclose(stress, ref["stress"], rtol=0, atol=tol)
    assert np.abs(np.array(ref["stress"])).max() > 0


def test_restart_resumes_with_the_checkpoint_backend(trained: Path, tiny_xyz: Path, tmp_path: Path) -> None:
    import shutil

    import mace_gaunt_plugin as mgp

    workdir = tmp_path / "restart"
    (workdir / "checkpoints").mkdir(parents=True)
    shutil.copy(trained / "checkpoints" / "tiny_run-1_epoch-0.pt", workdir / "checkpoints")
    before = _files(workdir)
    refused = _run([MACE_RUN_TRAIN, *_train_args(workdir, tiny_xyz, "--restart_latest", "--tp-backend", "e3nn", epochs=2)])
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"trained with TP backend '{BACKEND}'" in refused.stderr and "asks for 'e3nn'" in refused.stderr
    assert _files(workdir) == before
    # without --tp-backend: the checkpoint's backend and options
    _ok(_run([MACE_RUN_TRAIN, *_train_args(workdir, tiny_xyz, "--restart_latest", epochs=2)]))
    log = (workdir / "logs" / "tiny_run-1.log").read_text()
    assert "Loading checkpoint" in log and f"TP backend: '{BACKEND}'" in log and "conv_weights=l1l2" in log
    checkpoint = mgp.read_checkpoint(workdir / "checkpoints" / "tiny_run-1_epoch-1.pt")
    assert checkpoint["tp_backend"]["options"]["conv_weights"] == "l1l2"


def test_restart_of_a_checkpoint_written_before_an_option_existed(trained: Path, tiny_xyz: Path, tmp_path: Path) -> None:
    """A record without a newer option means its default: resuming works with and without --tp-backend."""
    import torch

    import mace_gaunt_plugin as mgp

    workdir = tmp_path / "old"
    (workdir / "checkpoints").mkdir(parents=True)
    old = mgp.read_checkpoint(trained / "checkpoints" / "tiny_run-1_epoch-0.pt")
    del old["mace_gaunt_plugin_guard"]  # as written before the guard existed
    for key in ("kernel", "product_basis", "product_rank"):
        del old["tp_backend"]["options"][key]
    torch.save(old, workdir / "checkpoints" / "tiny_run-1_epoch-0.pt")
    _ok(_run([MACE_RUN_TRAIN, *_train_args(workdir, tiny_xyz, "--restart_latest", "--tp-backend", BACKEND,
                                          "--tp-option", "conv_weights=l1l2", epochs=2)]))  # fmt: skip
    log = (workdir / "logs" / "tiny_run-1.log").read_text()
    assert "Loading checkpoint" in log and "kernel=auto" in log and "product_basis=power" in log
    assert mgp.read_checkpoint(workdir / "checkpoints" / "tiny_run-1_epoch-1.pt")["tp_backend"]["options"]["product_basis"] == "power"


def _digests(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _stock_run_train_by_path() -> str:
    import importlib.util

    return importlib.util.find_spec("mace.cli.run_train").origin


@pytest.mark.parametrize("how", ["plugin disabled", "run_train.py by path", "plugin not importable"])
def test_stock_mace_stops_on_a_plugin_checkpoint_and_writes_nothing(how: str, trained: Path, tiny_xyz: Path, tmp_path: Path) -> None:
    """Stock MACE skips a checkpoint it cannot load inside ``except Exception`` and trains a
    new model over the run; the guard in a plugin checkpoint stops it first, with a message."""
    import shutil

    workdir = tmp_path / "stock"
    (workdir / "checkpoints").mkdir(parents=True)
    shutil.copy(trained / "checkpoints" / "tiny_run-1_epoch-0.pt", workdir / "checkpoints")
    args = _train_args(workdir, tiny_xyz, "--restart_latest", epochs=2)
    if how == "plugin disabled":
        proc = _run([MACE_RUN_TRAIN, *args], env={"MACE_GAUNT_PLUGIN_DISABLE": "1"})
    elif how == "run_train.py by path":
        proc = _run([sys.executable, _stock_run_train_by_path(), *args])
    else:  # as if the plugin were not installed: no start-up hook, no package
        code = "import sys, runpy; sys.modules['mace_gaunt_plugin'] = None; sys.argv[:] = sys.argv[2:]; runpy.run_path(sys.argv[0], run_name='__main__')"
        proc = _run([sys.executable, "-c", code, "_", _stock_run_train_by_path(), *args], env={"MACE_GAUNT_PLUGIN_DISABLE": "1"})
    assert proc.returncode == 1, f"{how}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert f"written by mace-gaunt-plugin" in proc.stderr and f"TP backend '{BACKEND}'" in proc.stderr, proc.stderr[-3000:]
    assert "Stock MACE cannot resume it" in proc.stderr
    before = _digests(trained / "checkpoints")
    after = _digests(workdir / "checkpoints")
    assert after == {"tiny_run-1_epoch-0.pt": before["tiny_run-1_epoch-0.pt"]}
    assert not list(workdir.glob("*.model")), "stock MACE trained and saved a model over the plugin run"


def test_python_m_mace_cli_run_train_is_the_plugin_command(trained: Path, tiny_xyz: Path, tmp_path: Path) -> None:
    """``python -m mace.cli.run_train`` takes ``--tp-backend`` and resumes a plugin checkpoint."""
    import shutil

    import mace_gaunt_plugin as mgp

    workdir = tmp_path / "dash_m"
    (workdir / "checkpoints").mkdir(parents=True)
    shutil.copy(trained / "checkpoints" / "tiny_run-1_epoch-0.pt", workdir / "checkpoints")
    _ok(_run([sys.executable, "-m", "mace.cli.run_train", *_train_args(workdir, tiny_xyz, "--restart_latest", epochs=2)]))
    log = (workdir / "logs" / "tiny_run-1.log").read_text()
    assert "Loading checkpoint" in log and f"TP backend: '{BACKEND}'" in log
    assert mgp.backend_of(_load_model(workdir / "tiny.model")) == BACKEND
    assert mgp.read_checkpoint(workdir / "checkpoints" / "tiny_run-1_epoch-1.pt")["tp_backend"]["name"] == BACKEND


def _load_model(path: Path) -> object:
    import torch

    return torch.load(path, weights_only=False)


def test_without_the_option_training_is_stock(tiny_xyz: Path, tmp_path: Path) -> None:
    import torch

    import mace_gaunt_plugin as mgp

    _ok(_run([MACE_RUN_TRAIN, *_train_args(tmp_path, tiny_xyz)]))
    assert "TP backend" not in (tmp_path / "logs" / "tiny_run-1.log").read_text()
    checkpoint = torch.load(tmp_path / "checkpoints" / "tiny_run-1_epoch-0.pt", weights_only=False)
    assert set(checkpoint) == {"model", "optimizer", "lr_scheduler"}
    model = torch.load(tmp_path / "tiny.model", weights_only=False)
    assert mgp.backend_of(model) == "e3nn"
    assert not any(hasattr(m, "backend_name") for m in model.modules())
    # a stock checkpoint is an e3nn one: resuming it with another backend is refused
    before = _files(tmp_path)
    refused = _run([MACE_RUN_TRAIN, *_train_args(tmp_path, tiny_xyz, "--restart_latest", "--tp-backend", BACKEND, epochs=2)])
    assert refused.returncode == 2 and "trained with TP backend 'e3nn'" in refused.stderr, refused.stderr
    assert _files(tmp_path) == before


def test_a_stock_run_replaces_the_safe_file_an_earlier_plugin_run_left(trained: Path, tiny_xyz: Path, tmp_path: Path) -> None:
    """A grid run, then a stock run with the same --name: NAME.safetensors must not keep the
    grid model next to the new e3nn NAME.model (issue 24, defect 4)."""
    import shutil

    import torch

    import mace_gaunt_plugin as mgp

    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    assert mgp.backend_of(mgp.load_model(workdir / "tiny.safetensors")) == BACKEND
    _ok(_run([MACE_RUN_TRAIN, *_train_args(workdir, tiny_xyz)]))
    model = torch.load(workdir / "tiny.model", weights_only=False)
    assert mgp.backend_of(model) == "e3nn"
    safe = mgp.load_model(workdir / "tiny.safetensors")
    assert mgp.backend_of(safe) == "e3nn"
    for key, value in model.state_dict().items():
        assert torch.equal(safe.state_dict()[key], value), key
    log = (workdir / "logs" / "tiny_run-1.log").read_text()
    assert f"held a model of an earlier run (TP backend '{BACKEND}'); replacing it by this run's model" in log


def test_a_safe_file_that_cannot_be_rewritten_is_not_left_stale(tmp_path: Path, caplog) -> None:
    """When this run's model cannot be written as a safe model file, an earlier run's
    NAME.safetensors is removed rather than left to pass for this run's model."""
    import torch

    from mace_gaunt_plugin.mace._train import _write_safe_twin

    stale = tmp_path / "tiny.safetensors"
    stale.write_bytes(b"an earlier run's model")
    with caplog.at_level("WARNING"):
        _write_safe_twin(torch.nn.Linear(2, 2), tmp_path / "tiny.model")  # save_model refuses a Linear
    assert not stale.exists()
    assert "Could not write the safe model file" in caplog.text and "written by an earlier run" in caplog.text


@pytest.mark.parametrize(
    "extra, hidden, message",
    [
        (["--tp-backend", "no-such-backend"], "8x0e+8x1o", "unknown TP backend 'no-such-backend'; available backends: "),
        (["--tp-backend", BACKEND, "--tp-option", "sparsity=0.5"], "8x0e+8x1o", f"TP backend '{BACKEND}' does not take option(s) 'sparsity'"),
        (["--tp-backend", BACKEND], "16x0e+16x1e", "without natural parity (1e)"),
        (["--tp-backend", BACKEND, "--enable_cueq", "True"], "8x0e+8x1o", "cannot be combined with --enable_cueq"),
        (["--tp-backend", BACKEND, "--tp-option", "kernel=triton"], "8x0e+8x1o", "kernel='triton' cannot run here"),
        (["--tp-backend", "sparse", "--tp-option", f"seed={1 << 64}"], "8x0e+8x1o", "seed must fit in 64 bits"),
    ],
    ids=["unknown-backend", "unknown-option", "incompatible-irreps", "cueq", "triton-without-cuda", "seed-beyond-64-bits"],
)
def test_bad_input_is_refused_with_nothing_written(extra: list, hidden: str, message: str, tiny_xyz: Path, tmp_path: Path) -> None:
    before = _files(tmp_path)
    proc = _run([MACE_RUN_TRAIN, *_train_args(tmp_path, tiny_xyz, *extra, hidden=hidden)])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "mace_run_train: error:" in proc.stderr, proc.stderr
    assert _files(tmp_path) == before


def test_training_hooks_and_a_model_whose_backend_is_not_installed(tiny_xyz: Path, tmp_path: Path) -> None:
    """A third-party backend: its hooks run, and its model loads only where it is installed."""
    toy = make_toy_distribution(tmp_path / "toy")
    hook_log = tmp_path / "hooks.jsonl"
    workdir = tmp_path / "run"
    with_toy = {"PYTHONPATH": str(toy), "TOY_HOOK_LOG": str(hook_log)}
    _ok(_run([MACE_RUN_TRAIN, *_train_args(workdir, tiny_xyz, "--tp-backend", "toy", epochs=2)], env=with_toy))
    calls = [json.loads(line) for line in hook_log.read_text().splitlines()]
    # 9 training configurations, batch 3: 3 steps per epoch; the model's two convs are the toy's
    assert calls == [{"epoch": e, "steps": 3, "convs": 2} for e in (0, 1)]

    code = """
    import sys, torch, ase.io, mace_gaunt_plugin as mgp
    from mace.calculators import MACECalculator
    workdir, xyz = sys.argv[1], sys.argv[2]
    compiled = torch.jit.load(f"{workdir}/tiny_compiled.model")
    print("compiled", mgp.backend_of(compiled))
    try:
        model = torch.load(f"{workdir}/tiny.model", weights_only=False)
        print("loaded", mgp.backend_of(model), getattr(model, "toy_before_save_ran", False))
        MACECalculator(model_paths=f"{workdir}/tiny.model", device="cpu")
        print("calculator ok")
    except mgp.BackendNotInstalledError as exc:
        print("refused", exc)
    """
    args = [str(workdir), str(tiny_xyz)]
    present = _run([sys.executable, "-c", textwrap.dedent(code), *args], env=with_toy)
    _ok(present)
    assert "compiled toy" in present.stdout and "loaded toy True" in present.stdout and "calculator ok" in present.stdout
    absent = _run([sys.executable, "-c", textwrap.dedent(code), *args])
    _ok(absent)
    # TorchScript needs no Python classes; the pickle says what to install
    assert "compiled toy" in absent.stdout
    assert "refused This model uses the TP backend 'toy'" in absent.stdout, absent.stdout
    assert "package 'toy-mace-backend'" in absent.stdout and "pip install 'toy-mace-backend==0.1'" in absent.stdout

    (tmp_path / "ft").mkdir()
    before = _files(tmp_path / "ft")
    refused = _run([MACE_RUN_TRAIN, *_train_args(tmp_path / "ft", tiny_xyz, "--foundation_model", str(workdir / "tiny.model"))])
    assert refused.returncode == 2 and "package 'toy-mace-backend'" in refused.stderr, refused.stderr
    assert _files(tmp_path / "ft") == before


def test_start_up_hook_is_lazy_and_can_be_switched_off() -> None:
    code = """
    import sys
    heavy = sorted(m for m in ("torch", "mace", "e3nn", "mace_gaunt_plugin") if m in sys.modules)
    finders = [type(f).__name__ for f in sys.meta_path]
    print(heavy, "RunTrainFinder" in finders)
    """
    on = _python(code)
    _ok(on)
    assert on.stdout.split("\n")[0] == "[] True", on.stdout
    off = _python(code, env={"MACE_GAUNT_PLUGIN_DISABLE": "1"})
    _ok(off)
    assert off.stdout.split("\n")[0] == "[] False", off.stdout
    importtime = _run([sys.executable, "-X", "importtime", "-c", "pass"])
    _ok(importtime)
    assert "_mace_gaunt_plugin_startup" in importtime.stderr
    assert not any(name in importtime.stderr for name in ("torch", "mace_gaunt_plugin.", "| mace", "e3nn"))


def test_help_lists_every_backend_and_option() -> None:
    import mace_gaunt_plugin as mgp

    expected = ["--tp-backend", "--tp-option KEY=VALUE"]
    for name in mgp.available_backends():
        expected.append(f"  {name}")
        expected += [f"{opt.name}={opt.default}" for opt in mgp.get_backend(name).options]
    for cmd in ([MACE_RUN_TRAIN, "--help"], [sys.executable, "-m", "mace_gaunt_plugin.train", "--help"]):
        proc = _run(cmd)
        _ok(proc)
        missing = [e for e in expected if e not in proc.stdout]
        assert not missing, (cmd, missing)
        assert "--train_file" in proc.stdout
    stock = _run([MACE_RUN_TRAIN, "--help"], env={"MACE_GAUNT_PLUGIN_DISABLE": "1"})
    _ok(stock)
    assert "--train_file" in stock.stdout and "--tp-backend" not in stock.stdout


def test_distributed_cpu_training_with_two_processes(tiny_xyz: Path, tmp_path: Path) -> None:
    import torch

    import mace_gaunt_plugin as mgp

    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000), MACE_RUN_TRAIN,
           *_train_args(tmp_path, tiny_xyz, "--tp-backend", BACKEND, "--distributed", "--launcher", "torchrun")]  # fmt: skip
    _ok(_run(cmd))
    log = (tmp_path / "logs" / "tiny_run-1.log").read_text()
    assert "Processes: 2" in log and f"TP backend: '{BACKEND}'" in log
    assert mgp.backend_of(torch.load(tmp_path / "tiny.model", weights_only=False)) == BACKEND
    assert (tmp_path / "tiny_compiled.model").is_file()
