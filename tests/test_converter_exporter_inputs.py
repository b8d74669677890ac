"""The converter and the exporter refuse, before any work and with a message that says what
to do, an output that is the input or is misnamed or unwritable, element lists that do not
fit the model, and inputs that are not a model: a structure file, an ML-IAP export, a safe
model file given to the converter, a training checkpoint (issue 24, defects 1 and 8)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from test_safe_model_file import _model

import mace_gaunt_plugin as mgp
from lammps_interface import export
from mace_gaunt_plugin.mace import _safe_file as sf
from mace_gaunt_plugin.mace._checkpoint import guarded


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A pickled model, its safe file, an .xyz, an ML-IAP-like plain pickle and checkpoints."""
    import pickle

    root = tmp_path_factory.mktemp("inputs")
    model = _model("e3nn")
    out = {"model": root / "m.model", "safe": root / "m.safetensors", "xyz": root / "data.xyz",
           "mliap": root / "m.mliap", "ckpt": root / "tiny_run-1_epoch-0.pt", "stock_ckpt": root / "stock_epoch-0.pt"}  # fmt: skip
    torch.save(model, out["model"])
    mgp.save_model(model, out["safe"])
    out["xyz"].write_text("2\nProperties=species:S:1:pos:R:3\nH 0 0 0\nH 0 0 0.7\n")
    with open(out["mliap"], "wb") as f:
        pickle.dump({"not": "a model"}, f, protocol=pickle.HIGHEST_PROTOCOL)
    ckpt = {"model": model.state_dict(), "optimizer": {}, "lr_scheduler": {}}
    torch.save(guarded(ckpt, {"name": "grid", "options": {}, "plugin_version": mgp.__version__}), out["ckpt"])
    torch.save(ckpt, out["stock_ckpt"])
    return out


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


def _convert(capsys, *argv: str) -> tuple[int, str]:
    code = sf.convert_main(list(argv))
    return code, capsys.readouterr().err


def _export(capsys, *argv: str) -> tuple[int, str]:
    code = export.main(list(argv))
    return code, capsys.readouterr().err


# ------------------------------------------------------------------- defect 1: the input is never overwritten
def test_output_that_is_the_input_is_refused(files: dict[str, Path], capsys) -> None:
    root = files["model"].parent
    before = _snapshot(root)
    link = root / "link.model"
    os.symlink(files["model"], link)
    try:
        relative = os.path.relpath(files["model"])
        for argv in ([str(files["model"]), "-o", str(files["model"])], [str(link), "-o", relative]):
            code, err = _export(capsys, *argv)
            assert code == 2 and "is the input file itself" in err, err
        code, err = _export(capsys, str(files["safe"]), "-o", str(files["safe"]))
        assert code == 2 and "is the input file itself" in err, err
        with pytest.raises(sf.SafeModelFileError, match="is the input file itself"):
            sf.convert_model(link, files["model"])
    finally:
        link.unlink()
    assert _snapshot(root) == before


@pytest.mark.parametrize("name", ["x.safetensors", "x.model", "x_compiled.model", "X.SAFETENSORS"])
def test_exporter_refuses_a_model_file_name_for_its_pickle(name: str, files: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, err = _export(capsys, str(files["safe"]), "-o", str(tmp_path / name))
    assert code == 2 and "pickled ML-IAP wrapper" in err and "model.mliap" in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["x.model", "x.mliap", "x"])
def test_converter_writes_safetensors_names_only(name: str, files: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, err = _convert(capsys, str(files["model"]), "-o", str(tmp_path / name))
    assert code == 2 and "name it *.safetensors" in err, err
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------- defect 8: refusals before any work
def test_unwritable_output_is_refused_up_front(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no-such-dir" / "m.mliap"
    code, err = _export(capsys, str(files["safe"]), "-o", str(missing))
    assert code == 2 and "does not exist (create it first)" in err and "tmp" not in err.split("does not exist")[0][-12:], err
    code, err = _convert(capsys, str(files["model"]), "-o", str(tmp_path / "no-such-dir" / "m.safetensors"))
    assert code == 2 and "does not exist (create it first)" in err, err
    code, err = _export(capsys, str(files["safe"]), "-o", str(tmp_path))
    assert code == 2 and "is a directory" in err, err
    assert not list(tmp_path.iterdir())


def test_types_are_checked_before_anything_is_written(files: dict[str, Path], tmp_path: Path, capsys, monkeypatch) -> None:
    from lammps_interface.mliap_unified import MACEGauntMLIAP

    def never(*args, **kwargs):
        raise AssertionError("the model was exported although --types was wrong")

    monkeypatch.setattr(MACEGauntMLIAP, "from_model", never)
    out = tmp_path / "m.mliap"
    code, err = _export(capsys, str(files["safe"]), "-o", str(out), "--types", "C,Fe")
    assert code == 2 and "Fe that this model does not know" in err, err
    assert not out.exists()
    for bad in ("C,,H", "C,H,", ","):
        with pytest.raises(SystemExit) as exit_info:
            export.main([str(files["safe"]), "-o", str(out), "--types", bad])
        assert exit_info.value.code == 2
        assert "none empty" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kind, message",
    [
        ("xyz", "is a text file (a structure file such as .xyz?), not a MACE model"),
        ("mliap", "is a plain pickle, not a saved MACE model"),
        ("ckpt", "is a training checkpoint"),
        ("stock_ckpt", "is a training checkpoint"),
    ],
)
def test_inputs_that_are_not_a_model_are_named(kind: str, message: str, files: dict[str, Path], tmp_path: Path, capsys) -> None:
    for run, argv in ((_convert, ["-o", str(tmp_path / "x.safetensors")]), (_export, ["-o", str(tmp_path / "x.mliap")])):
        code, err = run(capsys, str(files[kind]), *argv)
        assert code == 2 and message in err, err
        assert "Traceback" not in err and "--restart_latest" not in err, err
    assert not list(tmp_path.iterdir())


def test_converter_given_a_safe_file_says_there_is_nothing_to_convert(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, err = _convert(capsys, str(files["safe"]), "-o", str(tmp_path / "y.safetensors"))
    assert code == 2 and "is already a safe model file: there is nothing to convert" in err, err
    renamed = tmp_path / "safe.model"
    renamed.write_bytes(files["safe"].read_bytes())
    code, err = _convert(capsys, str(renamed))
    assert code == 2 and "is already a safe model file" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["safe.model"]


def test_the_good_paths_still_work(files: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, _ = _convert(capsys, str(files["model"]), "-o", str(tmp_path / "c.safetensors"))
    assert code == 0 and mgp.backend_of(mgp.load_model(tmp_path / "c.safetensors")) == "e3nn"
    code, err = _export(capsys, str(files["model"]), "-o", str(tmp_path / "c.mliap"), "--types", "C, H")
    assert code == 0, err
