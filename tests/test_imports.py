"""Importing any module of the package is safe: the doctest run (``--doctest-modules``
in pyproject.toml) imports every one of them. Nothing is written, MACE is not patched,
no backend is registered or loaded by an import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import importlib, json, os, pkgutil
    import mace_gaunt_plugin
    names = sorted(m.name for m in pkgutil.walk_packages(mace_gaunt_plugin.__path__, "mace_gaunt_plugin."))
    for name in names:
        importlib.import_module(name)
    import mace.modules.blocks as blocks
    from mace_gaunt_plugin import registry
    stock = all(not hasattr(getattr(blocks, n), "_mgp_stock") for n in ("TensorProduct", "SymmetricContractionWrapper"))
    print(json.dumps({"modules": names, "stock": stock, "loaded": registry._LOADED, "files": os.listdir(".")}))
    """
)


def test_importing_every_module_is_safe(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "mace_gaunt_plugin.testing" in out["modules"] and "mace_gaunt_plugin.mace._train" in out["modules"]
    assert out["stock"], "an import patched mace.modules.blocks"
    assert not out["loaded"], "an import loaded the backend entry points"
    assert out["files"] == [], f"an import wrote {out['files']}"
