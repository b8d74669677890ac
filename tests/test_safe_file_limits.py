"""Safe model files edited by someone who recomputes the checksum: configs that imply huge
sizes are refused before anything is built (issue 24, defect 2), headers nested deep or
with a key given twice, loose version numbers and dtypes (defects 6 and 9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_safe_model_file import _model, _rewrite

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.errors import BackendOptionError
from mace_gaunt_plugin.mace import _safe_file as sf


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("limits") / "grid.safetensors"
    mgp.save_model(_model("grid"), path)
    return path


def _raw(src: Path, dst: Path, text: str) -> Path:
    """``src`` with its header replaced by ``text`` (any string; the checksum is not recomputed)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(dst), metadata={sf.HEADER_KEY: text})
    return dst


def _config(**changes):
    return lambda h: h["config"].update(changes)


HUGE = [
    (_config(num_bessel=10_000_000), "config.num_bessel is 10000000; a safe model file holds sizes up to 1048576"),
    (_config(num_bessel=9), "implies 9 values for radial_embedding.bessel_fn.bessel_weights, the file holds 8"),
    (_config(correlation=8), "'correlation' is 8; a safe model file may hold whole numbers 1 to 4"),
    (_config(correlation=[3, 8]), "'correlation' is [3, 8]"),
    (_config(num_interactions=300), "'num_interactions' is 300; a safe model file may hold 1 to 16"),
    (_config(num_interactions=3), "num_interactions=3, the file holds tensors of 2 interaction blocks"),
    (_config(hidden_irreps="65536x0e+65536x1o"), "implies 262144 values for node_embedding.linear.weight, the file holds 32"),
    (_config(hidden_irreps="8x0e+8x1o+8x2e"), "for interactions.1.linear_up.weight, the file holds 128"),
    (_config(hidden_irreps="8x0e+8x1o+1x50e"), "'hidden_irreps' has degree 50; a safe model file may hold degrees up to 6"),
    (_config(hidden_irreps="8x0e" + "+1x0e" * 200), "must be an irreps string of at most 512 characters"),
    (_config(max_ell=50), "'max_ell' is 50; a safe model file may hold 0 to 6"),
    (_config(radial_MLP=[100000, 100000]), "radial_MLP [100000, 100000], the file's interactions.0.conv_tp_weights.layer0.weight"),
    (_config(radial_MLP=[16] * 40), "'radial_MLP' must be a list of 1 to 16 positive whole numbers"),
    (_config(MLP_irreps="100000x0e"), "implies 800000 values for readouts.1.linear_1.weight, the file holds 128"),
    (_config(atomic_numbers=list(range(1, 200))), "must list 1 to 118 element numbers"),
    (_config(r_max=5.0, embedding_specs={"x": {"num_classes": 1 << 40}}), "config.embedding_specs.x.num_classes is 1099511627776"),
    (_config(heads=["h"] * 1000), "'heads' must list 1 to 64 head names"),
]


@pytest.mark.parametrize("edit, message", HUGE, ids=[m.split(";")[0].split(",")[0][:40] for _, m in HUGE])
def test_configs_implying_huge_sizes_are_refused_before_building(edit, message: str, grid_file: Path, tmp_path: Path, monkeypatch) -> None:
    """The checksum is recomputed after the edit, as an attacker would; nothing is built."""
    from mace_gaunt_plugin.mace import _config

    def never(*args, **kwargs):
        raise AssertionError("a model was built from a config that should have been refused first")

    monkeypatch.setattr(_config, "model_from_config", never)
    bad = _rewrite(grid_file, tmp_path / "huge.safetensors", edit_header=edit)
    with pytest.raises(sf.SafeModelFileError, match="(?s)" + _escape(message)):
        mgp.load_model(bad)


def test_a_missing_shared_tensor_is_refused_before_building(grid_file: Path, tmp_path: Path) -> None:
    bad = _rewrite(grid_file, tmp_path / "gone.safetensors", edit_tensors=lambda t: t.pop("interactions.1.linear_up.weight"))
    with pytest.raises(sf.SafeModelFileError, match="has no interactions.1.linear_up.weight"):
        mgp.load_model(bad)


def test_the_caps_still_load_every_backend(tmp_path: Path) -> None:
    """The shape checks accept what save_model writes for every backend (the round trips
    in test_safe_model_file load them all; here the compact sparse model too)."""
    for case in ("e3nn", "sparse-compact"):
        path = tmp_path / f"{case}.safetensors"
        mgp.save_model(_model(case), path)
        assert mgp.backend_of(mgp.load_model(path)) == mgp.backend_of(_model(case))


def test_save_model_refuses_what_load_model_would(tmp_path: Path, monkeypatch) -> None:
    from mace_gaunt_plugin.mace import _safe_limits

    monkeypatch.setattr(_safe_limits, "MAX_CORRELATION", 2)
    with pytest.raises(sf.SafeModelFileError, match="save_model: config entry 'correlation' is 3"):
        mgp.save_model(_model("grid"), tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def _escape(text: str) -> str:
    import re

    return re.escape(text)


# ------------------------------------------------------------------- the JSON header itself
def test_a_deeply_nested_header_is_a_safe_model_file_error(grid_file: Path, tmp_path: Path) -> None:
    deep = _raw(grid_file, tmp_path / "deep.safetensors", "[" * 2000 + "]" * 2000)
    with pytest.raises(sf.SafeModelFileError, match="nested more than 32 levels deep"):
        mgp.load_model(deep)
    with pytest.raises(sf.SafeModelFileError, match="nested more than 32 levels deep"):
        sf.read_header(deep)
    # brackets inside strings do not count
    header = sf.read_header(grid_file)
    header["plugin_version"] = "[" * 100
    shallow = _raw(grid_file, tmp_path / "shallow.safetensors", json.dumps(header))
    assert sf.read_header(shallow)["plugin_version"] == "[" * 100


def test_a_key_given_twice_is_refused(grid_file: Path, tmp_path: Path) -> None:
    text = json.dumps(sf.read_header(grid_file))
    twice = text.replace('"backend": "grid"', '"backend": "grid", "backend": "e3nn"')
    assert twice != text
    bad = _raw(grid_file, tmp_path / "twice.safetensors", twice)
    with pytest.raises(sf.SafeModelFileError, match="the key 'backend' appears twice"):
        mgp.load_model(bad)


@pytest.mark.parametrize("version", [True, 1.0, "1"], ids=["true", "1.0", "string"])
def test_format_version_must_be_the_integer(version, grid_file: Path, tmp_path: Path) -> None:
    bad = _rewrite(grid_file, tmp_path / "version.safetensors", edit_header=lambda h: h.update(format_version=version))
    with pytest.raises(sf.SafeModelFileError, match="safe model file format version"):
        mgp.load_model(bad)


def test_dtype_objects_are_checked_like_names(grid_file: Path) -> None:
    for dtype in (torch.float16, torch.bfloat16, torch.int64):
        with pytest.raises(sf.SafeModelFileError, match="is not float64 or float32"):
            mgp.load_model(grid_file, dtype=dtype)
    assert next(mgp.load_model(grid_file, dtype=torch.float32).parameters()).dtype == torch.float32


@pytest.mark.parametrize("seed", [1 << 64, 1 << 63, -(1 << 63) - 1, 1.5, True])
def test_a_sparse_seed_beyond_64_bits_is_refused(seed, tmp_path: Path) -> None:
    from mace_gaunt_plugin.registry import get_backend

    with pytest.raises(BackendOptionError, match="option 'seed'"):
        get_backend("sparse").resolve_options({"seed": seed})
    as_typed = seed if isinstance(seed, (bool, float)) else str(seed)  # as --tp-option gives it
    with pytest.raises(BackendOptionError, match="option 'seed'"):
        get_backend("sparse").resolve_options({"seed": as_typed})
    path = tmp_path / "sparse.safetensors"
    mgp.save_model(_model("sparse"), path)
    bad = _rewrite(path, tmp_path / "seed.safetensors", edit_header=lambda h: h["backend_options"].update(seed=seed))
    with pytest.raises(mgp.BackendError, match="option 'seed'"):
        mgp.load_model(bad)
    assert get_backend("sparse").resolve_options({"seed": (1 << 63) - 1})["seed"] == (1 << 63) - 1
