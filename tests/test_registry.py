"""Backend discovery through entry points, including third-party distributions."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _toy_backend import make_toy_distribution

import mace_gaunt_plugin as mgp
from mace_gaunt_plugin.errors import UnknownBackendError


def test_builtin_e3nn_is_registered() -> None:
    assert "e3nn" in mgp.available_backends()
    assert mgp.get_backend("e3nn").name == "e3nn"


def test_unknown_backend_lists_available() -> None:
    with pytest.raises(UnknownBackendError) as info:
        mgp.get_backend("no-such-backend")
    assert isinstance(info.value, ValueError)
    assert "no-such-backend" in str(info.value) and "e3nn" in str(info.value)


def test_import_is_cheap() -> None:
    code = "import sys, mace_gaunt_plugin; print('torch' in sys.modules, 'mace' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_third_party_backend_found_and_builds_model(tmp_path: Path, data_3bpa: Path) -> None:
    make_toy_distribution(tmp_path, extra_entry_points="broken = toy_backend_missing:NOPE\n")
    script = textwrap.dedent(
        f"""
        import sys, warnings
        sys.path.insert(0, {str(tmp_path)!r})
        import torch, ase.io
        import mace_gaunt_plugin as mgp
        from mace_gaunt_plugin.testing import small_mace_config, atoms_to_batch, model_energy_forces
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = mgp.available_backends()
        assert "toy" in names and "e3nn" in names, names
        assert "broken" not in names, names
        msgs = [str(w.message) for w in caught if "broken" in str(w.message)]
        assert msgs and "toy_backend_missing:NOPE" in msgs[0], [str(w.message) for w in caught]
        try:
            mgp.get_backend("broken")
        except ValueError as exc:
            assert "failed to load" in str(exc), exc
        else:
            raise SystemExit("broken backend was returned")
        cfg = small_mace_config(hidden_irreps="4x0e + 4x1o", num_interactions=1)
        torch.set_default_dtype(torch.float64)
        torch.manual_seed(0)
        model = mgp.build_model("toy", **cfg)
        torch.manual_seed(0)
        stock = mgp.build_model("e3nn", **cfg)  # the toy conv is e3nn's CG product: same draws, same model
        assert mgp.backend_of(model) == "toy"
        atoms = ase.io.read({str(data_3bpa / 'train_300K.xyz')!r}, ":1")
        batch = atoms_to_batch(atoms, cfg["atomic_numbers"], cfg["r_max"])
        e, f = model_energy_forces(model, batch)
        e0, f0 = model_energy_forces(stock, batch)
        assert f.shape == (27, 3) and f.abs().max() > 1e-6
        torch.testing.assert_close(e, e0, rtol=0, atol=1e-10)
        torch.testing.assert_close(f, f0, rtol=0, atol=1e-10)
        print("OK", float(e[0]))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK" in run.stdout
