"""Safe model files (data only): round trips for every backend and a compact sparse
model, refusals of damaged, edited and wrong-version files, code payloads that must never
run (in subprocesses, with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set and unset), the
converter, the exporter (safe input, exclusive temporary file, pair_coeff hint), every
torch.load passing weights_only, and real ``mace_run_train`` runs (the safe file next to
NAME.model; a restart that opens only the checkpoint it resumes)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
import pytest
import torch

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.backends import sparse_backend as sb
from mace_gaunt_plugin.mace import _safe_file as sf
from mace_gaunt_plugin.testing import atoms_to_batch, default_dtype, model_energy_forces, small_mace_config

REPO = Path(__file__).resolve().parents[1]
BACKENDS = mgp.available_backends()
CASES = BACKENDS + ["sparse-compact"]
EXACT = 1e-12

_MODELS: dict[str, torch.nn.Module] = {}


def _model(case: str) -> torch.nn.Module:
    """One float64 model per case (``sparse-compact``: frozen to a path subset, compacted)."""
    if case not in _MODELS:
        backend = "sparse" if case == "sparse-compact" else case
        with default_dtype(torch.float64):
            torch.manual_seed(0)
            model = mgp.build_model(backend, **small_mace_config())
        if case == "sparse-compact":
            sb.freeze(model, [[0, 2, 3], [1, 4, 6]])
            model = sb.compact(model)
        _MODELS[case] = model.eval()
    return _MODELS[case]


@pytest.fixture(scope="module")
def batch(bpa_atoms) -> dict[str, torch.Tensor]:
    cfg = small_mace_config()
    with default_dtype(torch.float64):
        return atoms_to_batch(bpa_atoms[:2], cfg["atomic_numbers"], cfg["r_max"])


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("safe") / "grid.safetensors"
    mgp.save_model(_model("grid"), path)
    return path


# ------------------------------------------------------------------- round trips
@pytest.mark.parametrize("case", CASES)
def test_round_trip_is_exact(case: str, batch, tmp_path: Path) -> None:
    model = _model(case)
    path = tmp_path / f"{case}.safetensors"
    assert mgp.save_model(model, path) == str(path)
    loaded = mgp.load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    assert mgp.backend_of(loaded) == mgp.backend_of(model)
    assert mgp.backend_options_of(loaded) == mgp.backend_options_of(model)
    want, got = model.state_dict(), loaded.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
        assert torch.equal(got[key], want[key]), key
    e0, f0 = model_energy_forces(model, batch)
    e1, f1 = model_energy_forces(loaded, batch)
    torch.testing.assert_close(e1, e0, rtol=0, atol=EXACT)
    torch.testing.assert_close(f1, f0, rtol=0, atol=EXACT)
    header = sf.read_header(path)
    assert header["format"] == sf.FORMAT and header["format_version"] == sf.FORMAT_VERSION
    assert header["backend"] == mgp.backend_of(model) and header["dtype"] == "float64"
    assert header["plugin_version"] == mgp.__version__ and header["model_class"] == "ScaleShiftMACE"


def test_compact_sparse_model_stays_compact(tmp_path: Path) -> None:
    model = _model("sparse-compact")
    path = tmp_path / "compact.safetensors"
    mgp.save_model(model, path)
    header = sf.read_header(path)
    assert header["kept_paths"] == [[list(p) for p in layer] for layer in sb.kept_paths(model)]
    loaded = mgp.load_model(path)
    assert [type(b.conv_tp).__name__ for b in loaded.interactions] == ["CompactCGConv"] * 2
    assert sb.kept_paths(loaded) == sb.kept_paths(model)
    assert sb.parameter_count(loaded) == sb.parameter_count(model) < sb.parameter_count(_model("sparse"))


def test_dtype_and_device_on_load(grid_file: Path, batch) -> None:
    loaded = mgp.load_model(grid_file, device="cpu", dtype="float32")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    with default_dtype(torch.float32):
        e32, _ = model_energy_forces(loaded, {k: v.float() if v.is_floating_point() else v for k, v in batch.items()})
    e64, _ = model_energy_forces(_model("grid"), batch)
    torch.testing.assert_close(e32.double(), e64, rtol=1e-5, atol=1e-4)
    with pytest.raises(sf.SafeModelFileError, match="float64 or float32"):
        mgp.load_model(grid_file, dtype="float16")


def test_safe_calculator_equals_the_model(grid_file: Path, bpa_atoms) -> None:
    atoms = bpa_atoms[0].copy()
    atoms.calc = mgp.safe_calculator(grid_file, device="cpu", default_dtype="float64")
    energy = atoms.get_potential_energy()
    cfg = small_mace_config()
    with default_dtype(torch.float64):
        e, _ = model_energy_forces(_model("grid"), atoms_to_batch([bpa_atoms[0]], cfg["atomic_numbers"], cfg["r_max"]))
    assert abs(energy - float(e.detach()[0])) <= EXACT * max(1.0, abs(energy))


def test_save_refuses_what_it_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(sf.SafeModelFileError, match="eager model"):
        mgp.save_model(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "x.safetensors")
    with pytest.raises(sf.SafeModelFileError, match="Linear is not supported"):
        mgp.save_model(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------- damaged and edited files
def _rewrite(src: Path, dst: Path, edit_header=None, edit_tensors=None, rehash: bool = True) -> Path:
    """A copy of ``src`` with its header and/or tensors edited (a valid safetensors file);
    ``rehash`` recomputes the checksum, as a deliberate editor would."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        header = json.loads(f.metadata()[sf.HEADER_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_header:
        edit_header(header)
    if edit_tensors:
        edit_tensors(tensors)
    if rehash:
        header["sha256"] = sf._digest(header, tensors)
    save_file(tensors, str(dst), metadata={sf.HEADER_KEY: json.dumps(header)})
    return dst


def test_truncated_file(grid_file: Path, tmp_path: Path) -> None:
    blob = grid_file.read_bytes()
    for n in (len(blob) - 100, len(blob) // 2, 12, 3, 0):
        bad = tmp_path / f"cut{n}.safetensors"
        bad.write_bytes(blob[:n])
        with pytest.raises(sf.SafeModelFileError, match="truncated or damaged"):
            mgp.load_model(bad)


def test_changed_bytes_and_edited_header_fail_the_checksum(grid_file: Path, tmp_path: Path) -> None:
    blob = bytearray(grid_file.read_bytes())
    blob[-5] ^= 0xFF  # one tensor byte
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(blob))
    with pytest.raises(sf.SafeModelFileError, match="checksum mismatch"):
        mgp.load_model(flipped)

    def more_channels(h: dict) -> None:
        h["config"]["hidden_irreps"] = "16x0e+16x1o"

    edited = _rewrite(grid_file, tmp_path / "edited.safetensors", edit_header=more_channels, rehash=False)
    with pytest.raises(sf.SafeModelFileError, match="checksum mismatch"):
        mgp.load_model(edited)
    # re-hashed: the header now describes another model, whose shapes the tensors do not
    # have; refused before anything is built (test_safe_file_limits.py has more)
    rehashed = _rewrite(grid_file, tmp_path / "rehashed.safetensors", edit_header=more_channels)
    with pytest.raises(sf.SafeModelFileError, match="implies 64 values for node_embedding.linear.weight, the file holds 32"):
        mgp.load_model(rehashed)


def test_changed_and_missing_tensors(grid_file: Path, tmp_path: Path) -> None:
    key = "interactions.0.linear.weight"

    def reshape(t: dict) -> None:
        t[key] = torch.cat([t[key], t[key][:3]])

    bad = _rewrite(grid_file, tmp_path / "shape.safetensors", edit_tensors=reshape)
    with pytest.raises(sf.SafeModelFileError, match=f"size mismatch for {key}"):
        mgp.load_model(bad)
    gone = _rewrite(grid_file, tmp_path / "gone.safetensors", edit_tensors=lambda t: t.pop(key))
    with pytest.raises(sf.SafeModelFileError, match=f"Missing key.*{key}"):
        mgp.load_model(gone)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda h: h.update(format_version=99), "format version 99; this mace-gaunt-plugin reads version 1"),
        (lambda h: h.update(format="other"), "not a mace-gaunt-plugin safe model file"),
        (lambda h: h.update(model_class="os.system"), "names the model class 'os.system'"),
        (lambda h: h["config"].update(gate="os.system"), "config entry 'gate' names 'os.system', which is not one of"),
        (lambda h: h["config"].update(interaction_cls="builtins.eval"), "'interaction_cls' names 'builtins.eval'"),
        (lambda h: h["config"].update(hidden_irreps="not irreps"), "not an irreps string"),
        (lambda h: h.update(backend="no-such-backend"), "unknown TP backend 'no-such-backend'"),
        (lambda h: h.pop("config"), "the header lacks config"),
    ],
    ids=["version", "format", "class", "gate", "interaction", "irreps", "backend", "no-config"],
)
def test_refused_headers(edit, message: str, grid_file: Path, tmp_path: Path) -> None:
    bad = _rewrite(grid_file, tmp_path / "bad.safetensors", edit_header=edit)
    with pytest.raises(mgp.BackendError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mgp.load_model(bad)


def test_a_pickle_is_not_a_safe_file(tmp_path: Path) -> None:
    path = tmp_path / "model.model"
    torch.save(_model("e3nn"), path)
    with pytest.raises(sf.SafeModelFileError, match="not a readable safetensors file"):
        mgp.load_model(path)
    with pytest.raises(sf.SafeModelFileError, match="does not exist"):
        mgp.load_model(tmp_path / "missing.safetensors")


# ------------------------------------------------------------------- code payloads
PAYLOAD = """
import sys, torch
class Payload:
    def __reduce__(self):
        return (open, (sys.argv[1], "w"))  # creates the marker file when unpickled
torch.save({"model": Payload()}, sys.argv[2])  # a torch zip file
import pickle
with open(sys.argv[3], "wb") as f:
    pickle.dump(Payload(), f)  # a bare pickle
"""

SAFE_PATHS = """
import sys, traceback
import mace_gaunt_plugin as mgp
from lammps_interface import export_model
from lammps_interface.mliap_unified import load_safe_model
out = []
for path in sys.argv[2:]:
    for name, call in (
        ("load_model", lambda: mgp.load_model(path)),
        ("safe_calculator", lambda: mgp.safe_calculator(path, device="cpu", default_dtype="float64")),
        ("export_model", lambda: export_model(path, path + ".mliap")),
        ("load_safe_model", lambda: load_safe_model(path)),
    ):
        try:
            call()
            out.append([name, "loaded"])
        except mgp.BackendError as exc:
            out.append([name, type(exc).__name__, str(exc)])
print("RESULT", __import__("json").dumps(out))
"""


def _run(code: str, *args: str, force: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    if force:
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd=str(REPO))  # fmt: skip


@pytest.fixture(scope="module")
def payloads(tmp_path_factory) -> dict[str, Path]:
    """Two payload files named like safe model files, and the marker they would write."""
    root = tmp_path_factory.mktemp("payload")
    files = {"marker": root / "PWNED", "zip": root / "zip_payload.safetensors", "bare": root / "bare_payload.safetensors"}
    proc = _run(PAYLOAD, str(files["marker"]), str(files["zip"]), str(files["bare"]), force=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return files


def test_payload_works_when_unpickled(payloads: dict[str, Path], tmp_path: Path) -> None:
    """Control: the payload really runs when something unpickles it."""
    marker = tmp_path / "control"
    proc = _run(PAYLOAD, str(marker), str(tmp_path / "z.pt"), str(tmp_path / "b.pkl"), force=False)
    assert proc.returncode == 0 and not marker.exists()
    code = "import sys, torch; torch.load(sys.argv[1], weights_only=False)"
    assert _run(code, str(tmp_path / "z.pt"), force=False).returncode == 0
    assert marker.exists()


@pytest.mark.parametrize("force", [True, False], ids=["env-set", "env-unset"])
def test_payload_never_runs_through_a_safe_path(force: bool, payloads: dict[str, Path]) -> None:
    proc = _run(SAFE_PATHS, str(payloads["marker"]), str(payloads["zip"]), str(payloads["bare"]), force=force)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert [r[0] for r in results] == ["load_model", "safe_calculator", "export_model", "load_safe_model"] * 2
    for result in results:
        assert result[1] in ("SafeModelFileError", "LAMMPSInterfaceError", "ModelFileError"), result
        assert "safetensors" in result[2] or "safe model file" in result[2], result
    assert not payloads["marker"].exists(), "a safe loader ran the payload"


# ------------------------------------------------------------------- converter
def test_converter(tmp_path: Path, capsys) -> None:
    src = tmp_path / "trusted.model"
    torch.save(_model("gaunt"), src)
    assert sf.convert_main([str(src)]) == 0
    out = tmp_path / "trusted.safetensors"
    assert "wrote" in capsys.readouterr().out and out.is_file()
    loaded = mgp.load_model(out)
    assert mgp.backend_of(loaded) == "gaunt"
    for key, value in _model("gaunt").state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert sf.convert_main([str(tmp_path / "missing.model"), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    scripted = tmp_path / "compiled.model"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    with pytest.raises(sf.SafeModelFileError, match="not \\*_compiled.model"):
        sf.convert_model(scripted)


def test_converter_help_says_the_input_is_a_pickle() -> None:
    exe = shutil.which("mace_gaunt_convert_model")
    cmd = [exe, "--help"] if exe else [sys.executable, "-m", "mace_gaunt_plugin.mace._safe_file", "--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "PICKLE" in text and "runs any code it contains" in text and "trust" in text


# ------------------------------------------------------------------- the exporter
def test_exporter_reads_a_safe_file_and_never_follows_a_planted_tmp_symlink(grid_file: Path, tmp_path: Path) -> None:
    from lammps_interface import export_model, load_model_file

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "grid.mliap"
    os.symlink(victim, str(out) + ".tmp")  # the name the exporter used to write through
    assert export_model(str(grid_file), str(out)) == str(out)
    assert victim.read_text() == "precious"
    assert os.path.islink(str(out) + ".tmp") and not out.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.mliap", "grid.mliap.tmp", "victim.txt"]
    wrapper = load_model_file(str(out))
    assert wrapper.backend == "grid" and wrapper.model_elements == ["H", "C", "N", "O"]


def test_atomic_writes_keep_the_permissions_of_a_plain_write(grid_file: Path, tmp_path: Path) -> None:
    """mkstemp makes 0600 files; written models must be as readable as open(path, "wb") makes them."""
    from lammps_interface import export_model

    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"")
    expected = plain.stat().st_mode & 0o777
    out = export_model(str(grid_file), str(tmp_path / "grid.mliap"))
    assert os.stat(out).st_mode & 0o777 == expected
    assert grid_file.stat().st_mode & 0o777 == expected  # written by save_model


def test_exporter_refuses_a_pickle_named_safetensors(tmp_path: Path) -> None:
    from lammps_interface import LAMMPSInterfaceError, export_model

    fake = tmp_path / "fake.safetensors"
    torch.save(_model("e3nn"), fake)
    with pytest.raises(LAMMPSInterfaceError, match="not opened as a pickle"):
        export_model(str(fake), str(tmp_path / "x.mliap"))
    assert not (tmp_path / "x.mliap").exists()


def test_pair_coeff_hint_follows_the_types_given(grid_file: Path, tmp_path: Path, capsys) -> None:
    from lammps_interface import export

    out = str(tmp_path / "m.mliap")
    assert export.main([str(grid_file), "-o", out, "--types", "C,H,N,O"]) == 0
    text = capsys.readouterr().out
    assert "pair_coeff * * C H N O  # atom type 1 = C, 2 = H, 3 = N, 4 = O" in text
    assert "pair_coeff * * H C N O" not in text
    assert export.main([str(grid_file), "-o", out]) == 0
    text = capsys.readouterr().out
    assert "pair_coeff * * ELEMENT_OF_TYPE_1 ELEMENT_OF_TYPE_2" in text
    assert "IN THE ORDER OF YOUR DATA FILE'S TYPES" in text and "0 = H, 1 = C, 2 = N, 3 = O" in text
    assert export.main([str(grid_file), "-o", out, "--types", "C,Fe"]) == 2
    assert "Fe that this model does not know" in capsys.readouterr().err


# ------------------------------------------------------------------- torch.load everywhere
def test_every_torch_load_passes_weights_only() -> None:
    """Every torch.load in the plugin's own code says weights_only explicitly."""
    calls = []
    for folder in ("mace_gaunt_plugin", "lammps_interface", "benchmarks"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
                    if isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                        calls.append((f"{path.relative_to(REPO)}:{node.lineno}", {k.arg for k in node.keywords}))
    assert len(calls) >= 5
    missing = [where for where, keys in calls if "weights_only" not in keys]
    assert not missing, missing


# ------------------------------------------------------------------- mace_run_train
MACE_RUN_TRAIN = str(Path(sys.executable).parent / "mace_run_train")
TRAIN = [
    "--name", "tiny", "--valid_fraction", "0.25", "--E0s", "average", "--energy_key", "energy",
    "--forces_key", "forces", "--hidden_irreps", "8x0e + 8x1o", "--max_ell", "2", "--correlation", "2",
    "--num_interactions", "2", "--r_max", "4.0", "--radial_MLP", "[16, 16]", "--batch_size", "3",
    "--valid_batch_size", "6", "--device", "cpu", "--default_dtype", "float64", "--seed", "1",
]  # fmt: skip


def _train(workdir: Path, xyz: Path, *extra: str, epochs: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.pop("MACE_GAUNT_PLUGIN_DISABLE", None)
    cmd = [MACE_RUN_TRAIN, "--work_dir", str(workdir), "--train_file", str(xyz), *TRAIN, "--max_num_epochs", str(epochs), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_3bpa: Path) -> tuple[Path, Path]:
    import ase.io

    root = tmp_path_factory.mktemp("train")
    xyz = root / "tiny.xyz"
    ase.io.write(xyz, ase.io.read(data_3bpa / "train_300K.xyz", ":12"))
    workdir = root / "run"
    proc = _train(workdir, xyz, "--tp-backend", "grid")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir, xyz


@pytest.mark.slow
def test_training_writes_the_safe_file(trained: tuple[Path, Path], bpa_atoms) -> None:
    workdir, _ = trained
    log = (workdir / "logs" / "tiny_run-1.log").read_text()
    assert f"Safe model file (data only, safe to share) saved to {workdir / 'tiny.safetensors'}" in log
    pickled = torch.load(workdir / "tiny.model", weights_only=False).eval()
    safe = mgp.load_model(workdir / "tiny.safetensors")
    assert mgp.backend_of(safe) == "grid" and mgp.backend_options_of(safe) == mgp.backend_options_of(pickled)
    for key, value in pickled.state_dict().items():
        assert torch.equal(safe.state_dict()[key], value), key
    with default_dtype(torch.float64):
        batch = atoms_to_batch(bpa_atoms, [1, 6, 7, 8], 4.0)
        e0, f0 = model_energy_forces(pickled, batch)
        e1, f1 = model_energy_forces(safe, batch)
    torch.testing.assert_close(e1, e0, rtol=0, atol=EXACT)
    torch.testing.assert_close(f1, f0, rtol=0, atol=EXACT)


@pytest.mark.slow
def test_restart_opens_only_the_checkpoint_it_resumes(trained: tuple[Path, Path], tmp_path: Path, payloads) -> None:
    """An old checkpoint that cannot be read (here: a code payload) is not opened; the latest
    is resumed. An unreadable latest checkpoint is named in the error."""
    workdir, xyz = trained
    run = tmp_path / "restart"
    ckpt = run / "checkpoints"
    ckpt.mkdir(parents=True)
    shutil.copy(workdir / "checkpoints" / "tiny_run-1_epoch-0.pt", ckpt / "tiny_run-1_epoch-1.pt")
    shutil.copy(payloads["zip"], ckpt / "tiny_run-1_epoch-0.pt")  # stale and hostile
    proc = _train(run, xyz, "--restart_latest", epochs=3)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (run / "logs" / "tiny_run-1.log").read_text()
    assert f"Loading checkpoint: {ckpt / 'tiny_run-1_epoch-1.pt'}" in log and "TP backend: 'grid'" in log
    assert (run / "tiny.model").is_file() and (run / "tiny.safetensors").is_file()
    assert not payloads["marker"].exists()

    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    shutil.copy(workdir / "checkpoints" / "tiny_run-1_epoch-0.pt", broken / "checkpoints" / "tiny_run-1_epoch-0.pt")
    (broken / "checkpoints" / "tiny_run-1_epoch-1.pt").write_bytes(b"not a checkpoint")
    proc = _train(broken, xyz, "--restart_latest", epochs=3)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "cannot read the checkpoint it would resume" in proc.stderr and "tiny_run-1_epoch-1.pt" in proc.stderr
    assert "Traceback" not in proc.stderr
