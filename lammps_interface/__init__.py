"""LAMMPS interface of mace-gaunt-plugin: run MACE models with any TP backend through
``pair_style mliap unified``.

* ``mace_gaunt_create_lammps_model`` (:mod:`lammps_interface.export`) writes the file;
* :mod:`lammps_interface.mliap_unified` is the ML-IAP model LAMMPS runs;
* ``build_lammps.sh`` builds a LAMMPS that can run it, ``prune_lammps_source.sh`` makes a
  small source tarball for machines without network.

Heavy imports (torch, mace, lammps) happen on first use of an attribute.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "attach_lammps": ".mliap_unified",
    "load_model_file": ".mliap_unified",
    "MACEGauntMLIAP": ".mliap_unified",
    "INPUT_DECK_LINES": ".mliap_unified",
    "export_model": ".export",
    "LAMMPSInterfaceError": "._errors",
    "ModelFileError": "._errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
